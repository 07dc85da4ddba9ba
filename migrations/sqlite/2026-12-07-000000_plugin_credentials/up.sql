-- Per-user secrets of login plugins (a TOTP seed, passkey credentials), sealed with
-- AES-256-GCM under the master key. The sealing's associated data binds each value to its
-- plugin, user and name, so a row copied elsewhere does not open.
CREATE TABLE plugin_credentials (
    plugin TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (plugin, user_id, name)
);

CREATE INDEX plugin_credentials_user_idx ON plugin_credentials (user_id);
