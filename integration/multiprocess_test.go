package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/respcache"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// mpPolicy exercises every shared collaborator: a dead primary (breakers),
// a cached route, a hedged route with a slow primary, a vendor with an rpm
// limit, and a tenant with a request quota.
const mpPolicy = `version: "mp-1"
default_route: chat
vendors:
  openai: {kind: openai, base_url: %[1]s, timeout: 10s, max_concurrency: 16}
  anthropic: {kind: anthropic, base_url: %[2]s, timeout: 10s, max_concurrency: 16}
  gemini: {kind: gemini, base_url: %[3]s, timeout: 10s, max_concurrency: 16, rpm: 5}
models:
  - {vendor: openai, model: gpt-4o-mini, price: {input_per_mtok: 0.15, output_per_mtok: 0.60}, context_window: 128000, latency_ms: 700, quality: 0.72}
  - {vendor: anthropic, model: claude-haiku-4-5, price: {input_per_mtok: 1, output_per_mtok: 5}, context_window: 200000, latency_ms: 900, quality: 0.80}
  - {vendor: anthropic, model: claude-sonnet-4-5, price: {input_per_mtok: 3, output_per_mtok: 15}, context_window: 200000, latency_ms: 1800, quality: 0.93}
  - {vendor: gemini, model: gemini-2.5-flash, price: {input_per_mtok: 0.30, output_per_mtok: 2.50}, context_window: 1000000, latency_ms: 800, quality: 0.78}
routes:
  - name: chat
    chain: [{vendor: openai, model: gpt-4o-mini}, {vendor: anthropic, model: claude-haiku-4-5}]
  - name: cached
    cache: {ttl: 10m}
    chain: [{vendor: anthropic, model: claude-haiku-4-5}]
  - name: hedged
    strategy: hedged
    hedge: {after: 200ms, max_ratio: 1}
    chain: [{vendor: anthropic, model: claude-sonnet-4-5}, {vendor: anthropic, model: claude-haiku-4-5}]
  - name: limited
    chain: [{vendor: gemini, model: gemini-2.5-flash}, {vendor: anthropic, model: claude-haiku-4-5}]
tenants:
  quota: {budget: {requests_per_day: 3}}
`

// mpEnv is the one configuration both deployments read.
var mpEnv = map[string]string{
	"SWITCHYARD_BREAKER_FAILURE_THRESHOLD": "3",
	"SWITCHYARD_BREAKER_OPEN_FOR":          "60s",
	"SWITCHYARD_LOG_LEVEL":                 "warn",
}

func mpScenario() *sim.Scenario {
	return &sim.Scenario{Vendors: map[string]sim.VendorScenario{
		"openai": {Behavior: sim.Behavior{Status: sim.Ptr(503)}}, // down for the whole run
		"anthropic": {Models: map[string]sim.Behavior{
			"claude-sonnet-4-5": {Latency: &sim.Latency{BaseMS: 3000}}, // the hedge must win
		}},
	}}
}

// mpFigures is what one run of the workload shows.
type mpFigures struct {
	OpenAICalls  int64          // calls that reached the dead vendor
	ChatOK       int            // of 30 chat requests
	Cached       int            // cached replies among 3 repeated prompts
	HedgeWinners map[string]int // model that answered each hedged request
	LimitedBy    map[string]int // vendor that answered each request of the rpm-limited route
	Quota        map[string]int // status (or error code) of 5 requests of a tenant allowed 3 a day
}

// runWorkload sends the same requests one after another and collects the
// figures that depend on breakers, cache, hedging, vendor limits, budgets.
func runWorkload(t *testing.T, nc *nats.Conn, simCalls func() int64) mpFigures {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	tenant := "mp" + randomSuffix()
	n := 0
	submit := func(tenant, route, prompt string) *envelope.Reply {
		n++
		req := &envelope.Request{ID: fmt.Sprintf("r%03d", n), Tenant: tenant, Route: route,
			Messages: []envelope.Message{{Role: "user", Content: prompt}}}
		r, err := c.Submit(ctx, req)
		if err != nil {
			t.Fatalf("%s %s: %v", route, req.ID, err)
		}
		return r
	}
	f := mpFigures{HedgeWinners: map[string]int{}, LimitedBy: map[string]int{}, Quota: map[string]int{}}
	for i := range 30 {
		if r := submit(tenant, "chat", fmt.Sprintf("chat %d", i)); r.Status == envelope.StatusOK {
			f.ChatOK++
		}
	}
	f.OpenAICalls = simCalls()
	for i := range 3 {
		for j := range 2 {
			if r := submit(tenant, "cached", fmt.Sprintf("same question %d", i)); r.Cached {
				f.Cached++
			}
			if j == 0 {
				// The gate stores the answer just after replying: wait for
				// it, so the repeat tests the cache and not the race.
				waitFor(t, 5*time.Second, func() bool { return cacheEntries(ctx, cache) > i })
			}
		}
	}
	for i := range 3 {
		f.HedgeWinners[submit(tenant, "hedged", fmt.Sprintf("hedged %d", i)).Model]++
	}
	for i := range 8 {
		f.LimitedBy[submit(tenant, "limited", fmt.Sprintf("limited %d", i)).Vendor]++
	}
	quotaTenant := "quota"
	for i := range 5 {
		r := submit(quotaTenant, "cached", fmt.Sprintf("quota %s %d", tenant, i))
		key := r.Status
		if r.Error != nil {
			key += ":" + r.Error.Code
		}
		f.Quota[key]++
	}
	return f
}

func writeMPPolicy(t *testing.T, simAddr string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "policy.yaml")
	body := fmt.Sprintf(mpPolicy, sim.BaseURL(simAddr, "openai"), sim.BaseURL(simAddr, "anthropic"), sim.BaseURL(simAddr, "gemini"))
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// The services run as separate processes (the standalone binaries) behave
// as inside `switchyard up`: the same workload gives the same figures.
// Before, the standalone router and executor had no circuit breakers and no
// hedging: the dead vendor got all 30 chat requests, and the slow primary
// answered every hedged request.
func TestSeparateProcessesBehaveLikeUp(t *testing.T) {
	bins := t.TempDir()
	built := map[string]string{}
	for _, s := range []string{"intake", "router", "executor", "gate"} {
		built[s] = buildCmd(t, bins, s, fmt.Sprintf("github.com/switchyard-llm/switchyard/services/%s/cmd/%s", s, s))
	}

	// Inside `up`.
	upFigures := func() mpFigures {
		srv := sim.New(sim.Scenario{}, zerolog.Nop()) // only to name a policy file; `up` runs its own
		addr, err := srv.Start("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		polFile := writeMPPolicy(t, addr)
		_ = srv.Close()
		env := map[string]string{"SWITCHYARD_POLICY": polFile, "SWITCHYARD_DATA_DIR": t.TempDir(), "SWITCHYARD_NATS_PORT": "-1",
			"SWITCHYARD_SIM": "on", "SWITCHYARD_SIM_ADDR": "127.0.0.1:0", "SWITCHYARD_HTTP_ADDR": "", "SWITCHYARD_LEDGER": "false", "SWITCHYARD_EDGE_ADDR": ""}
		for k, v := range mpEnv {
			env[k] = v
		}
		cfg, err := app.LoadConfig(envcfg.LookupMap(env))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Scenario = mpScenario()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sys, err := app.Start(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
		if err != nil {
			t.Fatal(err)
		}
		defer sys.Stop()
		return runWorkload(t, sys.NC, func() int64 { return sys.Sim.Calls().Model("openai", "gpt-4o-mini").Calls })
	}()

	// As separate processes on one NATS and one simulator.
	logs := newLineSink(t)
	procFigures := func() mpFigures {
		url := testkit.Server(t)
		srv := sim.New(*mpScenario(), zerolog.Nop())
		addr, err := srv.Start("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		polFile := writeMPPolicy(t, addr)
		type proc struct{ name, vendor string }
		procs := []proc{{"intake", ""}, {"router", ""}, {"gate", ""}, {"executor", "openai"}, {"executor", "anthropic"}, {"executor", "gemini"}}
		for _, p := range procs {
			httpAddr := freeAddr(t)
			cmd := exec.Command(built[p.name])
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SWITCHYARD_NATS_URL=" + url, "SWITCHYARD_POLICY=" + polFile,
				"SWITCHYARD_HTTP_ADDR=" + httpAddr, "SWITCHYARD_VENDOR=" + p.vendor}
			for k, v := range mpEnv {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			cmd.Stderr = logs.named(p.name + p.vendor + " ")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			waitFor(t, 20*time.Second, func() bool { return httpOK("http://" + httpAddr + "/healthz") })
		}
		nc, _ := testkit.Connect(t, url)
		return runWorkload(t, nc, func() int64 { return srv.Calls().Model("openai", "gpt-4o-mini").Calls })
	}()

	if bad := logKeyProblems(logs.all()); len(bad) > 0 {
		t.Errorf("%d log lines of the processes have duplicated or missing keys, e.g. %s", len(bad), bad[0])
	}
	t.Logf("inside up:           %+v", upFigures)
	t.Logf("separate processes:  %+v", procFigures)
	for _, f := range []struct {
		name string
		mpFigures
	}{{"up", upFigures}, {"processes", procFigures}} {
		if f.OpenAICalls > 5 {
			t.Errorf("%s: the dead vendor got %d calls for 30 requests; its breaker (threshold 3) never opened", f.name, f.OpenAICalls)
		}
		if f.ChatOK != 30 || f.Cached != 3 || f.HedgeWinners["claude-haiku-4-5"] != 3 || f.LimitedBy["gemini"] != 5 ||
			f.Quota["ok"] != 3 || len(f.Quota) != 2 {
			t.Errorf("%s: %+v; want 30 chat ok, 3 cached, 3 hedges won by claude-haiku-4-5, 5 calls to gemini (rpm 5), 3 of 5 quota requests ok", f.name, f.mpFigures)
		}
	}
	if d := upFigures.OpenAICalls - procFigures.OpenAICalls; d < -1 || d > 1 {
		t.Errorf("dead-vendor calls differ: %d inside up, %d as processes", upFigures.OpenAICalls, procFigures.OpenAICalls)
	}
	if fmt.Sprint(sorted(upFigures.Quota)) != fmt.Sprint(sorted(procFigures.Quota)) {
		t.Errorf("quota outcomes differ: %v inside up, %v as processes", upFigures.Quota, procFigures.Quota)
	}
}

func sorted(m map[string]int) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(out)
	return out
}

func cacheEntries(ctx context.Context, js jetstream.JetStream) int {
	kv, err := js.KeyValue(ctx, respcache.DefaultBucket)
	if err != nil {
		return 0
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return 0
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	return n
}
