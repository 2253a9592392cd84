#!/usr/bin/env bash
# The main job: starts ClickHouse (installing it if needed), runs the whole
# pipeline on embedded NATS with the vendor simulator, sends a sample
# workload through a vendor outage, and prints replies and the cost and
# fallback reports from ClickHouse. Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/clickhouse.sh
ch_ensure
go run ./services/switchyard demo "$@"
