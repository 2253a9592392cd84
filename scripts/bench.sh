#!/usr/bin/env bash
# Pipeline benchmark: the in-process pipeline against a zero-latency
# simulator at several offered loads, beside the same load sent straight to
# the simulator, then a saturation phase. Figures, not a pass/fail test.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/switchyard ./services/switchyard
exec bin/switchyard bench "$@"
