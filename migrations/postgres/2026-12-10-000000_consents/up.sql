-- What a person let a service learn of them (OpenID Connect consent): the scopes approved,
-- asked for once per person and service, listed and revocable by the person.
CREATE TABLE consents (
    user_id TEXT NOT NULL REFERENCES users (id),
    client_id TEXT NOT NULL,
    -- Space-separated.
    scope TEXT NOT NULL,
    granted_at TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- A service its organization marks as its own: its members sign in without a consent page.
ALTER TABLE services ADD COLUMN first_party BOOLEAN NOT NULL DEFAULT FALSE;
