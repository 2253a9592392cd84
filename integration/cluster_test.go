package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/sim"
)

// natsNode is one real nats-server process of a test cluster, started from
// deployments/nats/nats-<n>.conf with loopback addresses.
type natsNode struct {
	name                    string // server_name in its config: nats-1 …
	conf, store, log        string
	client, cluster, httpPt string
	cmd                     *exec.Cmd
}

func (n *natsNode) url() string { return "nats://127.0.0.1:" + n.client }

type natsCluster struct {
	t     *testing.T
	bin   string
	nodes []*natsNode
}

// startNATSCluster runs three nats-server processes built from the
// module's nats-server on the deployment's configs, each with its own
// store, and returns once the JetStream meta group has a leader and all
// three peers.
func startNATSCluster(t *testing.T, bin string) *natsCluster {
	t.Helper()
	c := &natsCluster{t: t, bin: bin}
	for i := range 3 {
		port := func() string { _, p, _ := net.SplitHostPort(freeAddr(t)); return p }
		c.nodes = append(c.nodes, &natsNode{
			name: fmt.Sprintf("nats-%d", i+1), conf: fmt.Sprintf("../deployments/nats/nats-%d.conf", i+1),
			store: t.TempDir(), log: filepath.Join(t.TempDir(), "server.log"), client: port(), cluster: port(), httpPt: port(),
		})
	}
	for i := range c.nodes {
		c.start(i)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if t.Failed() {
				out, _ := os.ReadFile(n.log)
				lines := strings.Split(strings.TrimSpace(string(out)), "\n")
				t.Logf("%s log (last lines):\n%s", n.name, strings.Join(lines[max(0, len(lines)-15):], "\n"))
			}
			if n.cmd != nil {
				_ = n.cmd.Process.Kill()
				_ = n.cmd.Wait()
			}
		}
	})
	for i := range c.nodes {
		c.healthy(i)
	}
	// The meta leader sees both followers current.
	waitFor(t, 30*time.Second, func() bool {
		for _, n := range c.nodes {
			var jsz struct {
				Meta struct {
					Leader   string `json:"leader"`
					Replicas []struct {
						Current bool `json:"current"`
					} `json:"replicas"`
				} `json:"meta_cluster"`
			}
			if !getJSON("http://127.0.0.1:"+n.httpPt+"/jsz", &jsz) || jsz.Meta.Leader != n.name {
				continue
			}
			current := 0
			for _, r := range jsz.Meta.Replicas {
				if r.Current {
					current++
				}
			}
			return current == 2
		}
		return false
	})
	return c
}

// start (re)starts node i on its ports and store: only the addresses and
// the store differ from the deployment's files.
func (c *natsCluster) start(i int) {
	c.t.Helper()
	n := c.nodes[i]
	var routes []string
	for _, o := range c.nodes {
		routes = append(routes, "nats://127.0.0.1:"+o.cluster)
	}
	cmd := exec.Command(c.bin, "-c", n.conf, "-a", "127.0.0.1", "-p", n.client, "-m", n.httpPt,
		"-cluster", "nats://127.0.0.1:"+n.cluster, "-routes", strings.Join(routes, ","))
	cmd.Env = []string{"NATS_STORE_DIR=" + n.store}
	logFile, err := os.OpenFile(n.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	_ = logFile.Close() // the child holds its own descriptor
	n.cmd = cmd
}

// healthy waits for node i's /healthz (JetStream ready, meta group joined).
func (c *natsCluster) healthy(i int) {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, func() bool { return httpOK("http://127.0.0.1:" + c.nodes[i].httpPt + "/healthz") })
}

// kill stops node i with SIGKILL: no lame duck, no flush.
func (c *natsCluster) kill(i int) {
	c.t.Helper()
	n := c.nodes[i]
	if err := n.cmd.Process.Kill(); err != nil {
		c.t.Fatal(err)
	}
	_ = n.cmd.Wait()
	n.cmd = nil
}

// urls is every node's URL, node first first.
func (c *natsCluster) urls(first int) string {
	var out []string
	for k := range c.nodes {
		out = append(out, c.nodes[(first+k)%len(c.nodes)].url())
	}
	return strings.Join(out, ",")
}

func (c *natsCluster) index(name string) int {
	return slices.IndexFunc(c.nodes, func(n *natsNode) bool { return n.name == name })
}

// connected lists the client names connected to node i (/connz).
func (c *natsCluster) connected(i int) []string {
	var connz struct {
		Conns []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	var out []string
	if getJSON("http://127.0.0.1:"+c.nodes[i].httpPt+"/connz?limit=1024", &connz) {
		for _, cn := range connz.Conns {
			out = append(out, cn.Name)
		}
	}
	return out
}

func getJSON(url string, v any) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) == nil
}

const clusterPolicy = `version: "cluster-1"
default_route: chat
vendors:
  openai: {kind: openai, base_url: %s, timeout: 10s, max_concurrency: 32}
models:
  - {vendor: openai, model: gpt-4o-mini, price: {input_per_mtok: 0.15, output_per_mtok: 0.60}, context_window: 128000, latency_ms: 700, quality: 0.72}
routes:
  - name: chat
    chain: [{vendor: openai, model: gpt-4o-mini}]
`

// streamLeader is the server name leading a stream ("" while electing).
func streamLeader(ctx context.Context, js jetstream.JetStream, stream string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// streamCurrent: every replica of the stream is online and caught up.
func streamCurrent(ctx context.Context, js jetstream.JetStream, stream string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		return false
	}
	for _, r := range info.Cluster.Replicas {
		if !r.Current || r.Offline {
			return false
		}
	}
	return true
}

// The pipeline on a real 3-node JetStream cluster (R3 streams and KV):
// intake, router, gate, two executor replicas and the ledger run as
// separate processes, each given every node's URL but connected to its own
// first; under load the node leading LLM_PIPELINE is killed with SIGKILL,
// then restarted on its store. Every request is answered exactly once (per
// subscriber and in LLM_REPLIES), the ledger holds each request and
// attempt exactly once, and every stream and bucket is R3.
func TestClusterStreamLeaderKilled(t *testing.T) {
	requireClickHouse(t)
	bins := t.TempDir()
	build := exec.Command("go", "build", "-o", bins+string(filepath.Separator), "github.com/nats-io/nats-server/v2",
		"github.com/switchyard-llm/switchyard/services/intake/cmd/intake",
		"github.com/switchyard-llm/switchyard/services/router/cmd/router",
		"github.com/switchyard-llm/switchyard/services/gate/cmd/gate",
		"github.com/switchyard-llm/switchyard/services/executor/cmd/executor",
		"github.com/switchyard-llm/switchyard/services/ledger/cmd/ledger")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cl := startNATSCluster(t, filepath.Join(bins, "nats-server"))

	simSrv := sim.New(sim.Scenario{Defaults: sim.Behavior{Latency: &sim.Latency{BaseMS: 80, JitterMS: 40}}}, zerolog.Nop())
	simAddr, err := simSrv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = simSrv.Close() })
	polFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(polFile, []byte(fmt.Sprintf(clusterPolicy, sim.BaseURL(simAddr, "openai"))), 0o600); err != nil {
		t.Fatal(err)
	}
	suffix := randomSuffix()
	db := "switchyard_it_" + suffix

	// Each process on its own first node; the two executors on different ones.
	type proc struct{ bin, vendor string }
	procs := []proc{{"intake", ""}, {"router", ""}, {"gate", ""}, {"executor", "openai"}, {"executor", "openai"}, {"ledger", ""}}
	logs := newLineSink(t)
	for i, p := range procs {
		httpAddr := freeAddr(t)
		cmd := exec.Command(filepath.Join(bins, p.bin))
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"),
			"SWITCHYARD_NATS_URL=" + cl.urls(i%3), "SWITCHYARD_NATS_REPLICAS=3",
			"SWITCHYARD_POLICY=" + polFile, "SWITCHYARD_HTTP_ADDR=" + httpAddr, "SWITCHYARD_VENDOR=" + p.vendor,
			"SWITCHYARD_LOG_LEVEL=info",
			// A delivery whose ack died with the node is redelivered soon.
			"SWITCHYARD_INTAKE_ACK_WAIT=5s", "SWITCHYARD_ROUTER_ACK_WAIT=5s", "SWITCHYARD_GATE_ACK_WAIT=5s", "SWITCHYARD_EXECUTOR_ACK_WAIT=5s",
			"SWITCHYARD_CLICKHOUSE_ADDR=" + clickhouseAddr(), "SWITCHYARD_CLICKHOUSE_DATABASE=" + db,
			"SWITCHYARD_LEDGER_FLUSH_INTERVAL=100ms"}
		cmd.Stderr = logs.named(fmt.Sprintf("%s[%d] ", p.bin, i))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		waitFor(t, 40*time.Second, func() bool { return httpOK("http://" + httpAddr + "/healthz") })
	}
	for i, p := range procs {
		if names := cl.connected(i % 3); !slices.Contains(names, "switchyard-"+p.bin) {
			t.Fatalf("%s[%d] is not connected to its first node %s (it holds %v)", p.bin, i, cl.nodes[i%3].name, names)
		}
	}
	joined := 0
	for _, line := range logs.all() {
		if strings.Contains(line, `"message":"joined nats"`) && strings.Contains(line, `"nats_cluster":"switchyard"`) {
			joined++
		}
	}
	if bad := logKeyProblems(logs.all()); len(bad) > 0 {
		t.Errorf("%d log lines with duplicated or missing keys, e.g. %s", len(bad), bad[0])
	}
	if joined != len(procs) {
		t.Errorf("%d of %d processes logged the cluster they joined", joined, len(procs))
	}

	var lcfg ledger.Config
	if err := envcfg.Process(envcfg.LookupMap(map[string]string{"SWITCHYARD_CLICKHOUSE_ADDR": clickhouseAddr(), "SWITCHYARD_CLICKHOUSE_DATABASE": db}), &lcfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ch, err := ledger.Open(ctx, lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db); _ = ch.Close() })
	e := &env{t: t, ch: ch, db: db, tenant: "t" + suffix}

	// The test's connection is to a node that is not killed: its core
	// subscription sees every reply published, duplicates included.
	victim := cl.index(streamLeader(ctx, mustJS(t, cl.nodes[0].url()), natsx.StreamPipeline))
	if victim < 0 {
		t.Fatal("LLM_PIPELINE has no leader")
	}
	observer := cl.nodes[(victim+1)%3]
	nc, err := nats.Connect(observer.url())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	replies := map[string][]time.Time{}
	var statuses []string
	attempts := 0
	sub, err := nc.Subscribe("llm.replies."+e.tenant+".>", func(m *nats.Msg) {
		var r envelope.Reply
		if json.Unmarshal(m.Data, &r) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if len(replies[r.ID]) == 0 {
			attempts += len(r.Attempts)
		}
		replies[r.ID] = append(replies[r.ID], time.Now())
		statuses = append(statuses, r.Status)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	distinct := func() int { mu.Lock(); defer mu.Unlock(); return len(replies) }

	// Load: n requests paced over loadFor; a publish that fails while a
	// stream elects a leader is retried (the intake dedupes tenant+id).
	const n = 360
	const loadFor = 18 * time.Second
	sentAt := make([]time.Time, n)
	var sent, publishRetries atomic.Int64
	pubErr := make(chan error, 1)
	go func() {
		tick := time.NewTicker(loadFor / n)
		defer tick.Stop()
		for i := range n {
			<-tick.C
			req := e.request(fmt.Sprintf("c%03d", i), "chat", fmt.Sprintf("cluster %d", i))
			sentAt[i] = time.Now()
			for {
				pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
				err := cli.Publish(pctx, req)
				pcancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					pubErr <- fmt.Errorf("publish %s: %w", req.ID, err)
					return
				}
				publishRetries.Add(1)
				time.Sleep(100 * time.Millisecond) // back off between retries, not a wait for a condition
			}
			sent.Add(1)
		}
		pubErr <- nil
	}()

	waitFor(t, 30*time.Second, func() bool { return sent.Load() >= n/4 })
	tKill := time.Now()
	cl.kill(victim)
	var newLeader string
	waitFor(t, 30*time.Second, func() bool {
		newLeader = streamLeader(ctx, js, natsx.StreamPipeline)
		return newLeader != "" && newLeader != cl.nodes[victim].name
	})
	tElected := time.Now()
	waitFor(t, 30*time.Second, func() bool { return sent.Load() >= n/2 })
	tRestart := time.Now()
	cl.start(victim)
	cl.healthy(victim)
	waitFor(t, 30*time.Second, func() bool { return streamCurrent(ctx, js, natsx.StreamPipeline) })
	tCaughtUp := time.Now()
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool { return distinct() >= n })
	tDone := time.Now()

	// Settled: both work queues empty, so nothing more will be replied.
	waitFor(t, 30*time.Second, func() bool {
		for _, name := range []string{natsx.StreamRequests, natsx.StreamPipeline} {
			s, err := js.Stream(ctx, name)
			if err != nil {
				return false
			}
			info, err := s.Info(ctx)
			if err != nil || info.State.Msgs > 0 {
				return false
			}
		}
		return true
	})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for i := range n {
		id := fmt.Sprintf("c%03d", i)
		if k := len(replies[id]); k != 1 {
			t.Errorf("%s: %d replies, want exactly 1", id, k)
		}
	}
	if bad := slices.DeleteFunc(slices.Clone(statuses), func(s string) bool { return s == envelope.StatusOK }); len(bad) > 0 {
		t.Errorf("%d replies not ok: %v", len(bad), bad[:min(len(bad), 5)])
	}
	totalAttempts := attempts
	mu.Unlock()
	rs, err := js.Stream(ctx, natsx.StreamReplies)
	if err != nil {
		t.Fatal(err)
	}
	info, err := rs.Info(ctx, jetstream.WithSubjectFilter("llm.replies."+e.tenant+".>"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != n {
		t.Errorf("LLM_REPLIES holds replies for %d subjects, want %d", len(info.State.Subjects), n)
	}
	for subject, k := range info.State.Subjects {
		if k != 1 {
			t.Errorf("%s: %d stored replies, want 1", subject, k)
		}
	}
	tenant := fmt.Sprintf(" WHERE tenant = '%s'", e.tenant)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL"+tenant, n, 60*time.Second); got != n {
		t.Errorf("requests rows = %d, want %d", got, n)
	}
	// One attempt row per vendor call: a call repeated after a redelivery
	// (its executor's ack died with the node) has its own attempt id, so
	// the ledger holds the attempts of the replies plus the repeats.
	calls := uint64(simSrv.Calls().Model("openai", "gpt-4o-mini").Calls)
	if got := e.eventually("SELECT count() FROM %s.attempts FINAL"+tenant, calls, 30*time.Second); got != calls {
		t.Errorf("attempt rows = %d, want %d (one per vendor call)", got, calls)
	}
	if got := e.count("SELECT uniqExact(request_id, attempt_id) FROM %s.attempts FINAL" + tenant); got != calls {
		t.Errorf("distinct attempts = %d, want %d", got, calls)
	}
	if calls < uint64(totalAttempts) {
		t.Errorf("%d vendor calls for %d attempts in the replies", calls, totalAttempts)
	}
	// Repeated calls, and how many began after the request was answered
	// (ts has second resolution: "after" means in a later second).
	repeated, afterAnswer := 0, 0
	rows, err := ch.Query(ctx, fmt.Sprintf("SELECT request_id, max(ts) FROM %s.attempts FINAL%s GROUP BY request_id HAVING count() > 1", db, tenant))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var last time.Time
		if err := rows.Scan(&id, &last); err != nil {
			t.Fatal(err)
		}
		repeated++
		mu.Lock()
		if rt := replies[id]; len(rt) > 0 && last.After(rt[0].Truncate(time.Second)) {
			afterAnswer++
		}
		mu.Unlock()
	}
	_ = rows.Close()
	if afterAnswer > 0 {
		t.Errorf("%d requests had the vendor called again after they were answered", afterAnswer)
	}

	// A plain client (as `switchyard policy apply` opens the store) leaves
	// the policy bucket R3; every stream and bucket is R3.
	if _, err := policy.OpenStore(ctx, js, "", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	var notR3 []string
	streams := 0
	for name := range js.StreamNames(ctx).Name() {
		streams++
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			notR3 = append(notR3, fmt.Sprintf("%s=R%d", name, r))
		}
	}
	if len(notR3) > 0 || streams < 6 {
		t.Errorf("%d streams; not R3: %v", streams, notR3)
	}

	// Figures.
	mu.Lock()
	defer mu.Unlock()
	lat := func(from, to time.Time) (int, time.Duration, time.Duration, time.Duration) {
		var ds []time.Duration
		for i := range n {
			if !sentAt[i].Before(from) && sentAt[i].Before(to) {
				if rt := replies[fmt.Sprintf("c%03d", i)]; len(rt) > 0 {
					ds = append(ds, rt[0].Sub(sentAt[i]))
				}
			}
		}
		if len(ds) == 0 {
			return 0, 0, 0, 0
		}
		slices.Sort(ds)
		return len(ds), ds[len(ds)/2], ds[(len(ds)*99)/100], ds[len(ds)-1]
	}
	rate := func(from, to time.Time) float64 {
		k := 0
		for _, rt := range replies {
			if !rt[0].Before(from) && rt[0].Before(to) {
				k++
			}
		}
		return float64(k) / to.Sub(from).Seconds()
	}
	var firsts []time.Time
	for _, rt := range replies {
		firsts = append(firsts, rt[0])
	}
	slices.SortFunc(firsts, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	for i := 1; i < len(firsts); i++ {
		gap = max(gap, firsts[i].Sub(firsts[i-1]))
	}
	start := sentAt[0]
	k, p50, p99, mx := lat(start, tKill)
	t.Logf("offered %.0f req/s; %d requests, %d attempts in the replies, %d vendor calls (%d requests called twice, %d of them after being answered), %d publish retries",
		float64(n)/loadFor.Seconds(), n, totalAttempts, calls, repeated, afterAnswer, publishRetries.Load())
	t.Logf("before the kill:          %3d requests  p50 %v  p99 %v  max %v  throughput %.1f replies/s", k, p50.Round(time.Millisecond), p99.Round(time.Millisecond), mx.Round(time.Millisecond), rate(start, tKill))
	k, p50, p99, mx = lat(tKill, tRestart)
	t.Logf("leader %s killed → restart (%v; new leader %s after %v): %3d requests  p50 %v  p99 %v  max %v  throughput %.1f replies/s",
		cl.nodes[victim].name, tRestart.Sub(tKill).Round(time.Millisecond), newLeader, tElected.Sub(tKill).Round(time.Millisecond), k, p50.Round(time.Millisecond), p99.Round(time.Millisecond), mx.Round(time.Millisecond), rate(tKill, tRestart))
	k, p50, p99, mx = lat(tRestart, tDone)
	t.Logf("after the restart (caught up in %v): %3d requests  p50 %v  p99 %v  max %v; longest gap between replies %v; all answered %v after the kill",
		tCaughtUp.Sub(tRestart).Round(time.Millisecond), k, p50.Round(time.Millisecond), p99.Round(time.Millisecond), mx.Round(time.Millisecond), gap.Round(time.Millisecond), tDone.Sub(tKill).Round(time.Millisecond))
}

func mustJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
