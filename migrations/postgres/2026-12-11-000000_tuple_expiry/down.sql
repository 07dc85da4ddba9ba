DROP INDEX tuples_expiry_idx;
ALTER TABLE changelog DROP COLUMN expires_at;
ALTER TABLE tuples DROP COLUMN expires_at;
