#!/usr/bin/env bash
# Pipeline benchmark on real NATS servers: intake, router, gate, two
# executors and the ledger as separate processes against a zero-latency
# simulator, first on one nats-server with R1 streams (as `up` runs), then
# on the 3-node cluster of deployments/nats with R3 streams, in the same
# run: the rate done at an offered 500 req/s with its p50/p99 (publish to
# reply), the saturated rate (256 in flight) and the R3/R1 ratio.
# Figures, not a pass/fail test. Needs ClickHouse (the ledger runs too).
# SWITCHYARD_BENCH_DURATION sets each phase's length (default 10s).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/clickhouse.sh
ch_ensure
export SWITCHYARD_TEST_CLICKHOUSE_ADDR=${SWITCHYARD_TEST_CLICKHOUSE_ADDR:-127.0.0.1:9000}
SWITCHYARD_BENCH_CLUSTER=1 CI=true go test -count=1 -timeout 10m -run '^TestClusterBenchR3VsR1$' -v ./integration/ |
  grep -E 'cluster_test.go:[0-9]+: |^(--- |FAIL|ok|PASS)' | sed -E 's/^ *cluster_test.go:[0-9]+: //'
