DROP INDEX api_keys_revoked_idx;
DROP INDEX token_families_revoked_idx;
DROP INDEX revoked_tokens_revoked_idx;
ALTER TABLE revoked_tokens DROP COLUMN revoked_at;
