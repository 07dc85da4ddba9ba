-- Service API keys (`ak_live_…`): shown once, stored as SHA-256, revocable.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES services (id),
    name TEXT NOT NULL,
    -- The first characters of the key, to tell keys apart in listings.
    prefix TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);

CREATE INDEX api_keys_service_idx ON api_keys (service_id);
