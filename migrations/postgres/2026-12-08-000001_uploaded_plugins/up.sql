-- Third-party login plugins uploaded through the platform API: checked like those of
-- GATEHOUSE_PLUGIN_DIR before they are kept, and installed again at every start.
CREATE TABLE uploaded_plugins (
    id TEXT PRIMARY KEY NOT NULL,
    manifest TEXT NOT NULL,
    wasm BYTEA NOT NULL,
    sha256 TEXT NOT NULL,
    uploaded_by TEXT NOT NULL,
    uploaded_at TIMESTAMP NOT NULL
);
