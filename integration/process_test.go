package integration

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// Two executor processes of one vendor share its queue; one is killed with
// SIGKILL mid-run, with vendor calls in flight. Every request is still
// answered exactly once: its unacked work is redelivered to the survivor.
func TestExecutorProcessKilledLosesNothing(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "executor")
	build := exec.Command("go", "build", "-o", bin, "github.com/switchyard-llm/switchyard/services/executor/cmd/executor")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build executor: %v\n%s", err, out)
	}
	e := start(t, func(c *app.Config) {
		c.ExternalExecutors = []string{"openai"}
		// Calls long enough that the first completions (what the kill waits
		// for) come while most of the queue is still ahead: the killed
		// replica dies with calls in flight, on a fast machine too.
		c.Scenario = &sim.Scenario{Defaults: sim.Behavior{Latency: &sim.Latency{BaseMS: 400, JitterMS: 50}}}
	})
	polData, err := policy.Marshal(e.sys.Policy) // vendors already point at the simulator
	if err != nil {
		t.Fatal(err)
	}
	polFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(polFile, polData, 0o600); err != nil {
		t.Fatal(err)
	}

	type proc struct {
		cmd  *exec.Cmd
		addr string
	}
	var procs []*proc
	for i := range 2 {
		addr := freeAddr(t)
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(),
			"SWITCHYARD_NATS_URL="+e.sys.NATSURL,
			"SWITCHYARD_POLICY="+polFile,
			"SWITCHYARD_VENDOR=openai",
			"SWITCHYARD_HTTP_ADDR="+addr,
			"SWITCHYARD_EXECUTOR_ACK_WAIT=2s",
			"SWITCHYARD_LOG_LEVEL=warn",
		)
		cmd.Stderr = &testLogWriter{t: t, prefix: fmt.Sprintf("executor[%d] ", i)}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &proc{cmd: cmd, addr: addr}
		procs = append(procs, p)
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		waitFor(t, 20*time.Second, func() bool { return httpOK("http://" + addr + "/healthz") })
	}

	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const n = 200
	for i := range n {
		if err := e.client.Publish(ctx, e.request(fmt.Sprintf("p%03d", i), "chat", fmt.Sprintf("process kill %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, func() bool {
		return executorCalls(procs[0].addr) > 0 && executorCalls(procs[1].addr) > 0
	})
	survivorBefore := executorCalls(procs[1].addr)
	if err := procs[0].cmd.Process.Kill(); err != nil { // SIGKILL: no graceful hand-back
		t.Fatal(err)
	}
	_ = procs[0].cmd.Wait()

	if err := col.Wait(ctx, n); err != nil {
		t.Fatal(err)
	}
	e.settled(30 * time.Second) // whatever else would be replied has been
	for id, rs := range col.All() {
		if len(rs) != 1 || rs[0].Status != envelope.StatusOK {
			t.Fatalf("%s: %d replies, first %+v", id, len(rs), rs[0])
		}
	}
	if stored := e.repliesStored(); len(stored) != n {
		t.Fatalf("stored replies for %d subjects, want %d", len(stored), n)
	} else {
		for subject, k := range stored {
			if k != 1 {
				t.Fatalf("%s: %d stored replies, want 1", subject, k)
			}
		}
	}
	if after := executorCalls(procs[1].addr); after <= survivorBefore {
		t.Fatalf("the surviving replica took no work after the kill (%.0f → %.0f)", survivorBefore, after)
	}
	tenant := fmt.Sprintf("tenant = '%s'", e.tenant)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL WHERE "+tenant, n, 30*time.Second); got != n {
		t.Fatalf("requests rows = %d, want %d", got, n)
	}
}

// connectAs connects to url the way every Switchyard process does
// (natsx.ClientAuth), closed at the test's cleanup.
func connectAs(t testing.TB, url string, auth natsx.ClientAuth) *nats.Conn {
	t.Helper()
	opts, err := auth.Options()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// freeAddr is a loopback address for a process that binds it after this
// returns (see fixedPort).
func freeAddr(t *testing.T) string {
	return "127.0.0.1:" + fixedPort(t)
}

// fixedPorts are the ports fixedPort handed out in this test binary.
var fixedPorts = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

// fixedPort is a free loopback port below the kernel's ephemeral range,
// for a process that binds it after this returns, or binds it again after a
// restart (the cluster's nodes). A port the kernel picks (listen on :0) is
// in the ephemeral range, where any outgoing connection of any process may
// take it as its local port in the meantime: a cluster node failed to
// start in CI with "bind: address already in use" on its route port, and
// the test went on with two nodes.
func fixedPort(t *testing.T) string {
	t.Helper()
	low := 32768 // Linux's default start of ip_local_port_range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	fixedPorts.Lock()
	defer fixedPorts.Unlock()
	for range 1000 {
		p := 10000 + rand.IntN(low-10000)
		if fixedPorts.given[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		_ = ln.Close()
		fixedPorts.given[p] = true
		return strconv.Itoa(p)
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

func httpOK(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// executorCalls sums switchyard_executor_calls_total from a process's /metrics.
func executorCalls(addr string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "switchyard_executor_calls_total{") {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

type testLogWriter struct {
	t      *testing.T
	prefix string
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
