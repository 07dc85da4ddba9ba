-- Nodes read which organizations changed since their last look every second (login pages
-- cache organizations for their branding).
CREATE INDEX organizations_updated_idx ON organizations (updated_at);
