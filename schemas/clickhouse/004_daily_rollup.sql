-- 004: daily rollup, a plain VIEW (computed at read time) over the tables
-- read with FINAL, so rows the ledger inserted more than once count once.
--
-- One row per day (UTC), tenant, vendor, model, endpoint_tag and
-- prompt_version: attempts, cost and tokens come from `attempts` (the
-- attempt's vendor/model, failed attempts included); requests and fallbacks
-- come from `requests` (the request's final vendor/model).
--
-- Deliberately not a MATERIALIZED VIEW: a materialized view aggregates each
-- INSERT block as it arrives and never sees FINAL, so a redelivered row
-- (same request_id/attempt_id, inserted again) would be added twice, and a
-- SummingMergeTree target cannot tell a duplicate from new traffic. See
-- docs/ledger.md.
--
-- Filter on `day` when reading it; the tables are read whole otherwise.
CREATE VIEW IF NOT EXISTS {database:Identifier}.daily_rollup AS
SELECT
    day, tenant, vendor, model, endpoint_tag, prompt_version,
    sum(attempts_n)      AS attempts,
    sum(cost_n)          AS cost_usd,
    sum(unpriced_n)      AS unpriced_attempts,
    sum(input_n)         AS input_tokens,
    sum(output_n)        AS output_tokens,
    sum(cached_n)        AS cached_tokens,
    sum(requests_n)      AS requests,
    sum(fallbacks_n)     AS fallbacks
FROM
(
    SELECT
        toDate(ts) AS day, tenant, vendor, model, endpoint_tag, prompt_version,
        toUInt64(count())                AS attempts_n,
        toFloat64(sum(cost_usd))         AS cost_n,
        toUInt64(countIf(price_known = 0)) AS unpriced_n,
        toUInt64(sum(input_tokens))      AS input_n,
        toUInt64(sum(output_tokens))     AS output_n,
        toUInt64(sum(cached_tokens))     AS cached_n,
        toUInt64(0)                      AS requests_n,
        toUInt64(0)                      AS fallbacks_n
    FROM {database:Identifier}.attempts FINAL
    GROUP BY day, tenant, vendor, model, endpoint_tag, prompt_version
    UNION ALL
    SELECT
        toDate(ts) AS day, tenant, vendor, model, endpoint_tag, prompt_version,
        toUInt64(0), toFloat64(0), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0),
        toUInt64(count()),
        toUInt64(countIf(fallback = 1))
    FROM {database:Identifier}.requests FINAL
    GROUP BY day, tenant, vendor, model, endpoint_tag, prompt_version
)
GROUP BY day, tenant, vendor, model, endpoint_tag, prompt_version
