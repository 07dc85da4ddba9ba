-- Access tokens revoked before they expire (RFC 7009), by their `jti`, kept until they would
-- have expired.
CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    expires_at TIMESTAMP NOT NULL
);

CREATE INDEX revoked_tokens_expires_idx ON revoked_tokens (expires_at);
