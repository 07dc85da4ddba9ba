DROP TABLE entity_attributes;
DROP TABLE decision_log;
DROP TABLE risk_profiles;
DROP TABLE store_settings;
