-- 006: the daily rollup (004) counts vendor calls, reasoning tokens and
-- abandoned calls.
--
-- Same plain VIEW over the tables read with FINAL (see 004 for why not a
-- materialized view). Changes: attempts are vendor calls only (rows of the
-- skipped classes circuit_open and saturated, written by older executors,
-- were never calls); reasoning_tokens is summed; abandoned counts calls left
-- 'started' (the executor died before the vendor answered: outcome and cost
-- unknown). A view cannot be altered on 18.16, so it is dropped and created
-- again: both statements are idempotent, and a re-run after a crash between
-- them recreates it.
DROP TABLE IF EXISTS {database:Identifier}.daily_rollup;
CREATE VIEW IF NOT EXISTS {database:Identifier}.daily_rollup AS
SELECT
    day, tenant, vendor, model, endpoint_tag, prompt_version,
    sum(attempts_n)      AS attempts,
    sum(cost_n)          AS cost_usd,
    sum(unpriced_n)      AS unpriced_attempts,
    sum(input_n)         AS input_tokens,
    sum(output_n)        AS output_tokens,
    sum(cached_n)        AS cached_tokens,
    sum(reasoning_n)     AS reasoning_tokens,
    sum(abandoned_n)     AS abandoned,
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
        toUInt64(sum(reasoning_tokens))  AS reasoning_n,
        toUInt64(countIf(outcome = 'started')) AS abandoned_n,
        toUInt64(0)                      AS requests_n,
        toUInt64(0)                      AS fallbacks_n
    FROM {database:Identifier}.attempts FINAL
    WHERE error_class NOT IN ('circuit_open', 'saturated')
    GROUP BY day, tenant, vendor, model, endpoint_tag, prompt_version
    UNION ALL
    SELECT
        toDate(ts) AS day, tenant, vendor, model, endpoint_tag, prompt_version,
        toUInt64(0), toFloat64(0), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0),
        toUInt64(0), toUInt64(0),
        toUInt64(count()),
        toUInt64(countIf(fallback = 1))
    FROM {database:Identifier}.requests FINAL
    GROUP BY day, tenant, vendor, model, endpoint_tag, prompt_version
)
GROUP BY day, tenant, vendor, model, endpoint_tag, prompt_version
