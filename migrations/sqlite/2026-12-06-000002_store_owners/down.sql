DROP TABLE store_owners;
