DROP TABLE assertions;
DROP TABLE changelog;
DROP TABLE tuples;
DROP TABLE authorization_models;
DROP TABLE store_revisions;
DROP TABLE stores;
