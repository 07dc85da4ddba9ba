DROP TABLE external_identities;
DROP TABLE service_plugins;
