DROP INDEX services_updated_idx;
ALTER TABLE services DROP COLUMN deleted_at;
ALTER TABLE services DROP COLUMN updated_at;
