DROP TABLE services;
DROP TABLE organizations;
DROP TABLE tiers;
DROP TABLE platform;
