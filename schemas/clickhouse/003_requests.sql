-- 003: one row per finished request (envelope.RequestEvent, subject
-- llm.telemetry.request).
--
-- Same exactly-once design as attempts: sorting key request_id, partition
-- from the event's own `ts` (when the request was received), reads with
-- FINAL. See docs/ledger.md.
CREATE TABLE IF NOT EXISTS {database:Identifier}.requests
(
    request_id      String,
    ts              DateTime('UTC'),
    finished_at     DateTime('UTC'),
    tenant          String,
    user_hash       String,
    endpoint_tag    String,
    prompt_version  String,
    environment     String,
    route           String,
    strategy        String,
    task            String,
    status          String,
    error_code      String,
    vendor          String,
    model           String,
    attempts        UInt16,
    fallback        UInt8,
    fallback_reason String,
    escalated       UInt8,
    degraded        UInt8,
    quality_passed  UInt8,
    cached          UInt8,
    cost_usd        Float64,
    latency_ms      UInt32,
    input_tokens    UInt32,
    output_tokens   UInt32,
    cached_tokens   UInt32,
    trace_id        String,
    ingested_at     DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (request_id)
