-- Cedar policies: immutable versions per store, and which one is active.

CREATE TABLE policy_versions (
    store_id TEXT NOT NULL REFERENCES stores (id),
    -- ULID: versions sort by creation.
    id TEXT NOT NULL,
    policies TEXT NOT NULL,
    -- The Cedar schema (JSON) the tenant supplied; NULL = generated from the latest model.
    schema_json TEXT,
    -- Template-linked policies, as JSON: [{"id", "template", "principal"?, "resource"?}].
    links_json TEXT NOT NULL DEFAULT '[]',
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (store_id, id)
);

CREATE TABLE policy_heads (
    store_id TEXT PRIMARY KEY REFERENCES stores (id),
    active_id TEXT NOT NULL
);
