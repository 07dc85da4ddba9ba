DROP TABLE policy_heads;
DROP TABLE policy_versions;
