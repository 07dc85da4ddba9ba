-- The decision log is kept in blocks: the entries one node flushed for one store (at most
-- 1,000, spanning at most a second), as one row, plus one key row per distinct subject and
-- resource in the block for filtered reads. A row and an index entry per decision cost the
-- embedded default more than the decision itself. Entries logged before this are dropped.
DROP TABLE decision_log;

-- No foreign key: stores are only ever marked deleted, and entries of deleted stores are not
-- written.
CREATE TABLE decision_blocks (
    store_id TEXT NOT NULL,
    -- The ULIDs of its oldest and newest entries.
    first_id TEXT NOT NULL,
    last_id TEXT NOT NULL,
    -- The entries, oldest first, as a JSON array.
    entries_json TEXT NOT NULL,
    -- The key rows that point here (a JSON array), removed with the block.
    keys_json TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    PRIMARY KEY (store_id, first_id)
);

CREATE INDEX decision_blocks_expires_idx ON decision_blocks (expires_at);

CREATE TABLE decision_block_keys (
    store_id TEXT NOT NULL,
    -- `s:<subject>` or `r:<resource>`.
    key TEXT NOT NULL,
    first_id TEXT NOT NULL,
    PRIMARY KEY (store_id, key, first_id)
);
