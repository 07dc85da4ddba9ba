-- Per-store settings (risk rules, decision log), risk histories, the decision log and
-- stored entity attributes.

CREATE TABLE store_settings (
    store_id TEXT NOT NULL REFERENCES stores (id),
    -- `risk` or `decision_log`.
    kind TEXT NOT NULL,
    settings_json TEXT NOT NULL,
    PRIMARY KEY (store_id, kind)
);

CREATE TABLE risk_profiles (
    store_id TEXT NOT NULL REFERENCES stores (id),
    subject TEXT NOT NULL,
    -- Devices, addresses, networks, last location, failures, hours of day.
    profile_json TEXT NOT NULL,
    -- Retention: the profile is removed after this.
    expires_at TIMESTAMP NOT NULL,
    PRIMARY KEY (store_id, subject)
);

CREATE INDEX risk_profiles_expires_idx ON risk_profiles (expires_at);

-- No foreign key: stores are only ever marked deleted, entries of deleted stores are not
-- written, and a per-row check would cost every logged decision a lookup.
CREATE TABLE decision_log (
    store_id TEXT NOT NULL,
    -- ULID: entries sort by time.
    id TEXT NOT NULL,
    decided_at TIMESTAMP NOT NULL,
    subject TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    allowed BOOLEAN NOT NULL,
    policy_version TEXT NOT NULL,
    -- The whole entry (context, policies, errors, risk, revision, latency) as JSON.
    entry_json TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    PRIMARY KEY (store_id, id)
) WITHOUT ROWID;

CREATE INDEX decision_log_subject_idx ON decision_log (store_id, subject, id);
CREATE INDEX decision_log_resource_idx ON decision_log (store_id, resource, id);
CREATE INDEX decision_log_expires_idx ON decision_log (expires_at);

CREATE TABLE entity_attributes (
    store_id TEXT NOT NULL REFERENCES stores (id),
    -- `type:id`.
    entity TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    attributes_json TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (store_id, entity)
);

CREATE INDEX entity_attributes_type_idx ON entity_attributes (store_id, entity_type, entity);
