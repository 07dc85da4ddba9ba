-- The login plugins each service offers, with the organization's configuration of each. The
-- fields the plugin's schema marks `writeOnly` (a client secret) are kept apart in `secrets`,
-- a JSON object sealed with AES-256-GCM under the master key and bound to the service and the
-- plugin; `config` holds the rest, in the clear.
CREATE TABLE service_plugins (
    service_id TEXT NOT NULL REFERENCES services (id),
    plugin TEXT NOT NULL,
    config TEXT NOT NULL,
    secrets TEXT,
    position INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (service_id, plugin)
);

-- Accounts at identity providers linked to Gatehouse users: the plugin that vouched, the
-- provider it named (an issuer) and the subject there.
CREATE TABLE external_identities (
    plugin TEXT NOT NULL,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    email TEXT,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (plugin, provider, subject)
);

CREATE INDEX external_identities_user_idx ON external_identities (user_id);
