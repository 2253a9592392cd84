-- 005: accounting that tells the truth.
--
-- attempts.reasoning_tokens / requests.reasoning_tokens: output tokens the
-- model spent thinking (a subset of output_tokens, priced as output).
-- attempts.cost_source: where cost_usd came from: 'vendor' (the vendor
-- reported its charge, OpenRouter's usage.cost), 'catalog' (the policy
-- catalog's prices applied to the vendor's token counts) or 'none' (no cost
-- known: a model missing from the catalog, or an attempt still 'started').
-- Rows written before this migration read the default from price_known.
--
-- One column per statement: ClickHouse 18.16 cannot add a column "if not
-- exists", so the migrator treats "column already exists" (code 44) from a
-- column-adding statement as applied, and a re-run after a crash between
-- statements is harmless.
--
-- Started attempts: an executor publishes an attempt event with outcome
-- 'started' before calling the vendor; the finished event has the same
-- attempt_id and ts. The ledger writes a started row with ingested_at =
-- 1970-01-01 00:00:01 (the lowest version), so ReplacingMergeTree(ingested_at)
-- keeps the finished row whichever arrives first. See docs/ledger.md.
ALTER TABLE {database:Identifier}.attempts ADD COLUMN reasoning_tokens UInt32 AFTER cache_write_tokens;
ALTER TABLE {database:Identifier}.attempts ADD COLUMN cost_source String DEFAULT if(price_known = 1, 'catalog', 'none') AFTER price_known;
ALTER TABLE {database:Identifier}.requests ADD COLUMN reasoning_tokens UInt32 AFTER cached_tokens;
