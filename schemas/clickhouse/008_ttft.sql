-- 008: time to first token of streamed attempts.
--
-- attempts.ttft_ms: milliseconds from the vendor call to its first streamed
-- delta; 0 for an attempt that was not streamed or sent no delta (rows
-- written before this migration read 0). One column per statement (see
-- 005): a re-run reports "column already exists", which the migrator
-- treats as applied.
ALTER TABLE {database:Identifier}.attempts ADD COLUMN ttft_ms UInt32 AFTER latency_ms;
