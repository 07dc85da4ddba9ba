-- Services can be changed (name, redirect URIs, grant types, secret) and deleted. A deleted
-- service keeps its row (API keys, token families and audit events refer to it) with
-- `deleted_at` set; nodes drop a changed service from their caches by reading `updated_at`.
ALTER TABLE services ADD COLUMN updated_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00';
UPDATE services SET updated_at = created_at;
ALTER TABLE services ADD COLUMN deleted_at TIMESTAMP;
CREATE INDEX services_updated_idx ON services (updated_at);
