-- A version per risk history, incremented by every save: nodes update a history by
-- compare-and-swap, so that concurrent updates on different nodes are not lost.
ALTER TABLE risk_profiles ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
