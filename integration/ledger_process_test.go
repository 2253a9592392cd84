package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// The ledger killed with SIGKILL in the middle of storing, then two ledger
// processes at once on the same consumer: every request and every attempt
// is stored exactly once.
func TestLedgerKilledThenTwoReplicas(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ledger")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/switchyard-llm/switchyard/services/ledger/cmd/ledger").CombinedOutput(); err != nil {
		t.Fatalf("build ledger: %v\n%s", err, out)
	}
	e := start(t, func(c *app.Config) { c.LedgerEnabled = false })
	polData, err := policy.Marshal(e.sys.Policy)
	if err != nil {
		t.Fatal(err)
	}
	polFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(polFile, polData, 0o600); err != nil {
		t.Fatal(err)
	}
	// The telemetry of 400 requests waits in JetStream: no ledger runs yet.
	const n = 400
	var reqs []*envelope.Request
	for i := range n {
		reqs = append(reqs, e.request(fmt.Sprintf("l%03d", i), "chat", fmt.Sprintf("ledger %d", i)))
	}
	attempts := 0
	for _, rs := range e.submitAll(reqs, 60*time.Second) {
		attempts += len(rs[0].Attempts)
	}

	ledgerProc := func(name string) *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(),
			"SWITCHYARD_NATS_URL="+e.sys.NATSURL,
			"SWITCHYARD_POLICY="+polFile,
			"SWITCHYARD_HTTP_ADDR=127.0.0.1:0",
			"SWITCHYARD_LOG_LEVEL=warn",
			"SWITCHYARD_CLICKHOUSE_ADDR="+clickhouseAddr(),
			"SWITCHYARD_CLICKHOUSE_DATABASE="+e.db,
			"SWITCHYARD_LEDGER_BATCH_SIZE=40",
		)
		cmd.Stderr = &testLogWriter{t: t, prefix: name + " "}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	first := ledgerProc("ledger[0]")
	// Kill it as soon as it has stored something but not everything.
	waitFor(t, 60*time.Second, func() bool { return e.count("SELECT count() FROM %s.attempts") > 0 })
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	stored := e.count("SELECT count() FROM %s.requests FINAL")
	t.Logf("killed the first ledger with %d of %d requests stored", stored, n)

	ledgerProc("ledger[1]")
	ledgerProc("ledger[2]")
	tenant := fmt.Sprintf(" WHERE tenant = '%s'", e.tenant)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL"+tenant, n, 90*time.Second); got != n {
		t.Fatalf("requests rows = %d, want %d", got, n)
	}
	if got := e.eventually("SELECT count() FROM %s.attempts FINAL"+tenant, uint64(attempts), 30*time.Second); got != uint64(attempts) {
		t.Fatalf("attempt rows = %d, want %d", got, attempts)
	}
	if got := e.count("SELECT uniqExact(request_id, attempt_id) FROM %s.attempts FINAL" + tenant); got != uint64(attempts) {
		t.Fatalf("distinct attempts = %d, want %d", got, attempts)
	}
}
