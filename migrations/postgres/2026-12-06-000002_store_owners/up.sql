-- The organization each store belongs to, for stores created with a service API key: such a
-- key reaches only its organization's stores. Stores without a row are the operator's
-- (created with a configured API key), which service keys cannot reach.
CREATE TABLE store_owners (
    store_id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    created_at TIMESTAMP NOT NULL
);

CREATE INDEX store_owners_organization_idx ON store_owners (organization_id, store_id);
