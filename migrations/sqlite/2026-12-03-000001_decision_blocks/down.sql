DROP TABLE decision_block_keys;
DROP TABLE decision_blocks;

CREATE TABLE decision_log (
    store_id TEXT NOT NULL,
    id TEXT NOT NULL,
    decided_at TIMESTAMP NOT NULL,
    subject TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    allowed BOOLEAN NOT NULL,
    policy_version TEXT NOT NULL,
    entry_json TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    PRIMARY KEY (store_id, id)
) WITHOUT ROWID;

CREATE INDEX decision_log_subject_idx ON decision_log (store_id, subject, id);
CREATE INDEX decision_log_resource_idx ON decision_log (store_id, resource, id);
CREATE INDEX decision_log_expires_idx ON decision_log (expires_at);
