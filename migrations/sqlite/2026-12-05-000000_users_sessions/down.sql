DROP TRIGGER audit_events_no_update;
DROP TRIGGER audit_events_no_delete;
DROP TABLE audit_events;
DROP TABLE refresh_tokens;
DROP TABLE token_families;
ALTER TABLE organizations DROP COLUMN primary_color;
ALTER TABLE organizations DROP COLUMN logo_url;
DROP TABLE memberships;
DROP TABLE users;
