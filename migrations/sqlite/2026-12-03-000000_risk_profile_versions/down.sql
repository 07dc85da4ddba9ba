ALTER TABLE risk_profiles DROP COLUMN version;
