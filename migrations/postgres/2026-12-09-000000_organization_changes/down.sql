DROP INDEX organizations_updated_idx;
