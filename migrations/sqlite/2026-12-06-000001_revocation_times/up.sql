-- When each revocation was made, so that nodes read only what changed since their last read
-- (a full read stays as a periodic safety net, and covers rows from before this column).
ALTER TABLE revoked_tokens ADD COLUMN revoked_at TIMESTAMP;
CREATE INDEX revoked_tokens_revoked_idx ON revoked_tokens (revoked_at);
CREATE INDEX token_families_revoked_idx ON token_families (revoked_at);
CREATE INDEX api_keys_revoked_idx ON api_keys (revoked_at);
