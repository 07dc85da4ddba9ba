-- The platform's own store (the authorization model of management and sign-ins), one row.
CREATE TABLE platform (
    id INTEGER PRIMARY KEY,
    store_id TEXT NOT NULL
);

-- Tiers carry the limits organizations are held to.
CREATE TABLE tiers (
    name TEXT PRIMARY KEY,
    max_users BIGINT NOT NULL,
    max_services BIGINT NOT NULL
);

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    tier TEXT NOT NULL REFERENCES tiers (name),
    -- `pending`, `active` or `rejected`.
    status TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- Services: applications, each an OIDC client of its organization.
CREATE TABLE services (
    -- The client_id.
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    -- SHA-256 (hex) of the client secret, shown once; NULL for public clients.
    secret_sha256 TEXT,
    -- JSON arrays.
    redirect_uris TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE INDEX services_organization_idx ON services (organization_id);
