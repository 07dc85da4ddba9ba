-- Keys that sign tokens (ID tokens, access tokens). The private key is sealed with AES-256-GCM
-- under the master key; the public half is published in the JWKS from creation until
-- `published_until`, which lies past `signs_until` by the longest lifetime of what it signed.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    -- `RS256`, `ES256` or `EdDSA`.
    alg TEXT NOT NULL,
    -- Successive keys of one algorithm: 0, 1, 2… (unique, so two nodes rotating at once
    -- create one key, not two).
    generation BIGINT NOT NULL,
    private_key TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    signs_from TIMESTAMP NOT NULL,
    signs_until TIMESTAMP NOT NULL,
    published_until TIMESTAMP NOT NULL,
    UNIQUE (alg, generation)
);
