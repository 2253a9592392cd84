#!/usr/bin/env bash
# Runs the whole test suite: every module of the workspace, against an
# embedded NATS server and a real local ClickHouse (installed and started
# here if needed, and stopped again if this script started it). Also checks
# that gofmt, go vet and `go mod tidy` leave nothing to change.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/clickhouse.sh

mods=$(go list -m -f '{{.Dir}}')

echo "== gofmt" >&2
unformatted=$(gofmt -l $mods)
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

echo "== go mod tidy (each module must resolve its siblings without go.work)" >&2
for m in $mods; do
  (cd "$m" && GOWORK=off GOFLAGS=-mod=mod go mod tidy -diff) || { echo "go mod tidy changes $m"; exit 1; }
  (cd "$m" && GOWORK=off go build ./...) || { echo "$m does not build without go.work"; exit 1; }
done

echo "== go vet" >&2
go vet $(for m in $mods; do echo "$m/..."; done)

echo "== service binaries do not link the NATS server (only up and tests embed one)" >&2
for s in intake router executor gate ledger sim edge; do
  if go list -deps "./services/$s/cmd/$s" | grep -q nats-server; then echo "services/$s/cmd/$s links nats-server"; exit 1; fi
done

ch_ensure
# TestClickHouseCluster starts ZooKeeper and two replicas itself; install the
# packages here so an apt-get run does not count against the test timeout.
bash scripts/clickhouse-cluster.sh install

echo "== chromium (renders the HTML report in a test)" >&2
command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium) || echo "chromium could not be installed; the HTML render test fails when CI is set" >&2
export SWITCHYARD_TEST_CLICKHOUSE_ADDR=${SWITCHYARD_TEST_CLICKHOUSE_ADDR:-127.0.0.1:9000}

echo "== go test" >&2
# The deployments module only decodes files (no goroutines of its own):
# without -race it reuses go vet's build of k8s.io/api, compose-go and
# nats-server instead of compiling them a second time with the race
# detector, minutes of CPU on a 2-core CI machine.
racemods=$(for m in $mods; do [ "$m" = "$PWD/deployments" ] || echo "$m/..."; done)
go test -race -count=1 -timeout 14m "$@" $racemods
go test -count=1 -timeout 5m "$@" ./deployments/...
# The CPU-ratio regression checks (issue 9) skip themselves under the race
# detector, whose instrumentation outweighs the code they compare.
go test -count=1 -timeout 2m -run 'CPUAgainst' ./pkg/pipeline/ ./pkg/envelope/
