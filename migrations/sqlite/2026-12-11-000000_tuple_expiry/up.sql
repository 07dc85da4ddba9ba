-- Relationships that expire: from `expires_at` on, a tuple counts at no revision, and the
-- sweeper removes it. The changelog keeps the expiry each write carried.
ALTER TABLE tuples ADD COLUMN expires_at TIMESTAMP;
ALTER TABLE changelog ADD COLUMN expires_at TIMESTAMP;
-- The sweeper's scan: only tuples that carry an expiry are indexed.
CREATE INDEX tuples_expiry_idx ON tuples (expires_at) WHERE expires_at IS NOT NULL;
