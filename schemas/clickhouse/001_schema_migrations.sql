-- 001: migration bookkeeping.
--
-- {database:Identifier} is a ClickHouse query parameter: the ledger's
-- migrator replaces it with the configured database (default `switchyard`).
-- By hand on a current server:
--   clickhouse-client --param_database=switchyard --multiquery < 001_schema_migrations.sql
--
-- One row per applied migration. Two ledgers migrating at once may both
-- record a version; ReplacingMergeTree (read with FINAL) keeps one.
CREATE TABLE IF NOT EXISTS {database:Identifier}.schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY (version)
