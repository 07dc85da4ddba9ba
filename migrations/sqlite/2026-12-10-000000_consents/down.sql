ALTER TABLE services DROP COLUMN first_party;
DROP TABLE consents;
