-- 007: the requests table is keyed by (tenant, request_id).
--
-- Request ids are per tenant (two tenants may both send "r1"), but 003
-- sorted requests by request_id alone, so ReplacingMergeTree kept one of two
-- tenants' rows with the same id. A sorting key cannot gain a leading column
-- in place, so the table is rebuilt: a new table with the right key, a copy,
-- a swap by RENAME, and a second copy that picks up any row a ledger
-- replica inserted into the old table between the first copy and the swap
-- (duplicates collapse under FINAL). The old table is kept as
-- requests_before_007 for the operator to drop. A re-run after a crash
-- between statements is harmless: the migrator treats a RENAME whose target
-- already exists as applied, and the copies only add duplicates FINAL hides.
CREATE TABLE IF NOT EXISTS {database:Identifier}.requests_by_tenant
(
    request_id       String,
    ts               DateTime('UTC'),
    finished_at      DateTime('UTC'),
    tenant           String,
    user_hash        String,
    endpoint_tag     String,
    prompt_version   String,
    environment      String,
    route            String,
    strategy         String,
    task             String,
    status           String,
    error_code       String,
    vendor           String,
    model            String,
    attempts         UInt16,
    fallback         UInt8,
    fallback_reason  String,
    escalated        UInt8,
    degraded         UInt8,
    quality_passed   UInt8,
    cached           UInt8,
    cost_usd         Float64,
    latency_ms       UInt32,
    input_tokens     UInt32,
    output_tokens    UInt32,
    cached_tokens    UInt32,
    reasoning_tokens UInt32,
    trace_id         String,
    ingested_at      DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, request_id);
INSERT INTO {database:Identifier}.requests_by_tenant (request_id, ts, finished_at, tenant, user_hash, endpoint_tag, prompt_version, environment, route, strategy, task, status, error_code, vendor, model, attempts, fallback, fallback_reason, escalated, degraded, quality_passed, cached, cost_usd, latency_ms, input_tokens, output_tokens, cached_tokens, reasoning_tokens, trace_id, ingested_at)
SELECT request_id, ts, finished_at, tenant, user_hash, endpoint_tag, prompt_version, environment, route, strategy, task, status, error_code, vendor, model, attempts, fallback, fallback_reason, escalated, degraded, quality_passed, cached, cost_usd, latency_ms, input_tokens, output_tokens, cached_tokens, reasoning_tokens, trace_id, ingested_at FROM {database:Identifier}.requests;
RENAME TABLE {database:Identifier}.requests TO {database:Identifier}.requests_before_007, {database:Identifier}.requests_by_tenant TO {database:Identifier}.requests;
INSERT INTO {database:Identifier}.requests (request_id, ts, finished_at, tenant, user_hash, endpoint_tag, prompt_version, environment, route, strategy, task, status, error_code, vendor, model, attempts, fallback, fallback_reason, escalated, degraded, quality_passed, cached, cost_usd, latency_ms, input_tokens, output_tokens, cached_tokens, reasoning_tokens, trace_id, ingested_at)
SELECT request_id, ts, finished_at, tenant, user_hash, endpoint_tag, prompt_version, environment, route, strategy, task, status, error_code, vendor, model, attempts, fallback, fallback_reason, escalated, degraded, quality_passed, cached, cost_usd, latency_ms, input_tokens, output_tokens, cached_tokens, reasoning_tokens, trace_id, ingested_at FROM {database:Identifier}.requests_before_007;
DROP TABLE IF EXISTS {database:Identifier}.requests_by_tenant;
