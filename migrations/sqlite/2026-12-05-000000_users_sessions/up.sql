-- Users are global; memberships place them in organizations with a role (DESIGN.md, "Tenancy").
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    -- Lowercased.
    email TEXT NOT NULL UNIQUE,
    email_verified BOOLEAN NOT NULL,
    name TEXT NOT NULL,
    -- Argon2id in PHC string form; NULL for a user without a password.
    password_hash TEXT,
    -- Consecutive failed password logins, and the lockout they earned.
    failed_logins INTEGER NOT NULL,
    locked_until TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE memberships (
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    -- owner, admin, member or viewer.
    role TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);

CREATE INDEX memberships_user_idx ON memberships (user_id);

-- Branding of the hosted login pages.
ALTER TABLE organizations ADD COLUMN logo_url TEXT;
ALTER TABLE organizations ADD COLUMN primary_color TEXT;

-- A refresh token family: the chain of refresh tokens rotated from one authorization. A reused
-- token revokes its family, and with it every access token the family issued.
CREATE TABLE token_families (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    -- The login session (its public id) the family belongs to.
    session_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    -- JSON array of the authentication methods (amr) of the login.
    amr TEXT NOT NULL,
    auth_time TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);

CREATE INDEX token_families_session_idx ON token_families (session_id);
CREATE INDEX token_families_user_idx ON token_families (user_id);
CREATE INDEX token_families_expires_idx ON token_families (expires_at);

-- Refresh tokens, by the SHA-256 of the token. `used_at` is set when one is exchanged: a
-- second exchange is reuse.
CREATE TABLE refresh_tokens (
    token_sha256 TEXT PRIMARY KEY,
    family_id TEXT NOT NULL REFERENCES token_families (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP
);

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

-- The audit log: security-relevant events, appended and never changed.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TIMESTAMP NOT NULL,
    -- NULL for events of the platform itself.
    organization_id TEXT,
    -- `user:<id>`, `service:<client_id>`, `platform` or `anonymous`.
    actor TEXT NOT NULL,
    ip TEXT,
    kind TEXT NOT NULL,
    -- JSON object.
    details TEXT NOT NULL
);

CREATE INDEX audit_events_org_idx ON audit_events (organization_id, id);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are immutable'); END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are immutable'); END;
