#!/usr/bin/env bash
# Runs the side-by-side harness (../shared/bench-peers/run.sh, its README says
# what it measures) on this tree, the way the README's benchmark figures
# were taken: `switchyard up` with NATS authentication off.
#
# Why off: the harness's load generator (natsload) is a plain NATS client
# without credentials, and run.sh clears every SWITCHYARD_* variable before
# it starts `up`, whose default (SWITCHYARD_NATS_AUTH=on) refuses such a
# client. Nothing in the product lets an unauthenticated client in (that is
# what authentication on promises), so the measured process runs with it off
# (loopback only, as the harness binds it), through a wrapper in PERF_BIN.
# With it on a request also crosses the tenant account's import.
#
#   PERF_BIN=/tmp/sy-bench scripts/bench-peers.sh   # plus any PERF_* setting of run.sh
#
# PERF_BUILD (default "tools bifrost switchyard") is what build.sh builds;
# add portkey for the portkey target.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HARNESS=${PERF_HARNESS:-$ROOT/../shared/bench-peers}
BIN=${PERF_BIN:?set PERF_BIN to a folder of your own (outside the shared one)}
mkdir -p "$BIN"
BIN=$(cd "$BIN" && pwd)
rm -f "$BIN/switchyard" # the wrapper of an earlier run: go build does not overwrite a script
PERF_BIN=$BIN PERF_BUILD=${PERF_BUILD:-"tools bifrost switchyard"} SWITCHYARD_SRC=$ROOT "$HARNESS/build.sh"
mv -f "$BIN/switchyard" "$BIN/switchyard.bin"
cat >"$BIN/switchyard" <<WRAP
#!/bin/sh
# scripts/bench-peers.sh: the harness's natsload has no credentials
SWITCHYARD_NATS_AUTH=off exec "$BIN/switchyard.bin" "\$@"
WRAP
chmod +x "$BIN/switchyard"
PERF_SKIP_BUILD=1 PERF_BIN=$BIN exec "$HARNESS/run.sh"
