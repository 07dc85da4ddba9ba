-- Single-use tokens sent by email: address verification, password reset, and invitations to
-- an organization. Stored as SHA-256; `used_at` is set when one is used.
CREATE TABLE email_tokens (
    token_sha256 TEXT PRIMARY KEY,
    -- `verify`, `reset` or `invite`.
    purpose TEXT NOT NULL,
    email TEXT NOT NULL,
    -- The account (verify, reset); NULL for an invitation.
    user_id TEXT,
    -- An invitation's organization and role.
    organization_id TEXT,
    role TEXT,
    -- Who sent an invitation.
    invited_by TEXT,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP
);

CREATE INDEX email_tokens_org_idx ON email_tokens (organization_id, purpose);
