-- Gatehouse storage: stores, models, tuples at revisions, the changelog and assertions.
-- Timestamps are UTC `timestamp` (one diesel schema serves PostgreSQL and SQLite).
-- The SQL stays within what CockroachDB's PostgreSQL dialect accepts.

CREATE TABLE stores (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    deleted_at TIMESTAMP
);

CREATE INDEX stores_name_idx ON stores (name, id) WHERE deleted_at IS NULL;

-- The newest revision of each store; its row is locked (SELECT ... FOR UPDATE) to allocate the
-- next revision inside a write transaction, which serializes writers of one store.
CREATE TABLE store_revisions (
    store_id TEXT PRIMARY KEY REFERENCES stores (id),
    head BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE authorization_models (
    store_id TEXT NOT NULL REFERENCES stores (id),
    id TEXT NOT NULL,
    schema_version TEXT NOT NULL,
    model_json TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (store_id, id)
);

-- Every version of every tuple: a tuple is visible at revision `rev` when
-- `created_rev <= rev AND (deleted_rev IS NULL OR deleted_rev > rev)`.
CREATE TABLE tuples (
    id BIGSERIAL PRIMARY KEY,
    store_id TEXT NOT NULL REFERENCES stores (id),
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    relation TEXT NOT NULL,
    user_value TEXT NOT NULL,
    user_type TEXT NOT NULL,
    condition_name TEXT,
    condition_context TEXT,
    created_rev BIGINT NOT NULL,
    deleted_rev BIGINT,
    created_at TIMESTAMP NOT NULL
);

-- At most one live version of a tuple.
CREATE UNIQUE INDEX tuples_live_unique_idx
    ON tuples (store_id, object_type, object_id, relation, user_value)
    WHERE deleted_rev IS NULL;
-- Check lookups (object#relation). Not partial: snapshot reads below the head also need the
-- versions deleted after their revision.
CREATE INDEX tuples_object_idx ON tuples (store_id, object_type, object_id, relation);
-- Reverse lookups (which objects does this user relate to).
CREATE INDEX tuples_user_idx ON tuples (store_id, user_value, object_type, relation);
-- Paging through a store in id order.
CREATE INDEX tuples_store_id_idx ON tuples (store_id, id);

CREATE TABLE changelog (
    store_id TEXT NOT NULL REFERENCES stores (id),
    revision BIGINT NOT NULL,
    seq INTEGER NOT NULL,
    operation TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    relation TEXT NOT NULL,
    user_value TEXT NOT NULL,
    condition_name TEXT,
    condition_context TEXT,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (store_id, revision, seq)
);

CREATE INDEX changelog_type_idx ON changelog (store_id, object_type, revision, seq);

CREATE TABLE assertions (
    store_id TEXT NOT NULL REFERENCES stores (id),
    model_id TEXT NOT NULL,
    assertions_json TEXT NOT NULL,
    PRIMARY KEY (store_id, model_id)
);
