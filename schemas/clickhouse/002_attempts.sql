-- 002: one row per vendor attempt (envelope.AttemptEvent, subject
-- llm.telemetry.attempt).
--
-- Exactly-once reads: the ledger may insert an attempt more than once (a
-- JetStream redelivery, a retried insert after a ClickHouse outage, a ledger
-- restart). Duplicates share the sorting key (request_id, attempt_id) and,
-- because the partition key is computed from the event's own timestamp `ts`
-- (never from ingested_at), they always land in the same partition, where
-- ReplacingMergeTree collapses them. Queries read with FINAL so a duplicate
-- that has not been merged yet is never counted. See docs/ledger.md.
--
-- Types are the ones ClickHouse 18.16 and current releases share: DateTime,
-- String, UInt*/Float64, UInt8 for booleans; no LowCardinality, TTL or CODEC.
CREATE TABLE IF NOT EXISTS {database:Identifier}.attempts
(
    request_id         String,
    attempt_id         String,
    attempt            UInt16,
    ts                 DateTime('UTC'),
    tenant             String,
    user_hash          String,
    endpoint_tag       String,
    prompt_version     String,
    environment        String,
    route              String,
    strategy           String,
    vendor             String,
    model              String,
    outcome            String,
    error_class        String,
    http_status        UInt16,
    input_tokens       UInt32,
    output_tokens      UInt32,
    cached_tokens      UInt32,
    cache_write_tokens UInt32,
    cost_usd           Float64,
    price_known        UInt8,
    latency_ms         UInt32,
    hedged             UInt8,
    cache_hit          UInt8,
    trace_id           String,
    ingested_at        DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (request_id, attempt_id)
