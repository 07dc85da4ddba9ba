DROP TRIGGER audit_events_no_change ON audit_events;
DROP FUNCTION audit_events_immutable();
DROP TABLE audit_events;
DROP TABLE refresh_tokens;
DROP TABLE token_families;
ALTER TABLE organizations DROP COLUMN primary_color;
ALTER TABLE organizations DROP COLUMN logo_url;
DROP TABLE memberships;
DROP TABLE users;
