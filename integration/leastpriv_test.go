package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsserver"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// TestSeparateProcessesWithOwnCredentials: the workload of
// TestSeparateProcessesBehaveLikeUp (breakers, cache, hedging, vendor
// limits, quotas) runs on intake, router, gate and executor processes that
// each hold only their own least-privilege credentials from `up`'s data
// directory, with no stage of `up` left to help: the permissions are
// enough for everything a stage does, and the server refuses none of it.
func TestSeparateProcessesWithOwnCredentials(t *testing.T) {
	bins := t.TempDir()
	built := map[string]string{}
	for _, s := range []string{"intake", "router", "executor", "gate", "edge"} {
		built[s] = buildCmd(t, bins, s, fmt.Sprintf("github.com/switchyard-llm/switchyard/services/%s/cmd/%s", s, s))
	}
	srv := sim.New(*mpScenario(), zerolog.Nop())
	addr, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	polFile := writeMPPolicy(t, addr)

	// `up` (the operator) makes the keys, the credentials, the streams and
	// the buckets, then stops; its server comes back alone on the same
	// data directory.
	dataDir := t.TempDir()
	env := map[string]string{"SWITCHYARD_POLICY": polFile, "SWITCHYARD_DATA_DIR": dataDir, "SWITCHYARD_NATS_PORT": "-1",
		"SWITCHYARD_SIM": "on", "SWITCHYARD_SIM_ADDR": "127.0.0.1:0", "SWITCHYARD_HTTP_ADDR": "", "SWITCHYARD_LEDGER": "false", "SWITCHYARD_EDGE_ADDR": ""}
	for k, v := range mpEnv {
		env[k] = v
	}
	cfg, err := app.LoadConfig(envcfg.LookupMap(env))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := app.Start(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	sys.Stop()
	auth, err := natsauth.Load(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	url := authServer(t, dataDir, auth)

	// Anchors `up` stored; each service stores its streams' own at start.
	opNC := connectAs(t, url, natsx.ClientAuth{Creds: natsauth.CredsFile(dataDir, natsauth.OperatorUser)})
	opJS, err := jetstream.New(opNC)
	if err != nil {
		t.Fatal(err)
	}
	anchors := func() map[string]uint64 {
		out := map[string]uint64{}
		for _, name := range []string{natsx.StreamRequests, natsx.StreamPipeline} {
			s, err := opJS.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			out[name] = anchorSeq(ctx, s)
		}
		return out
	}
	upAnchors := anchors()

	logs := newLineSink(t)
	type proc struct{ name, vendor string }
	var executorMetrics []string
	var intakeMetrics, gateMetrics string
	for _, p := range []proc{{"intake", ""}, {"router", ""}, {"gate", ""}, {"executor", "openai"}, {"executor", "anthropic"}, {"executor", "gemini"}} {
		httpAddr := freeAddr(t)
		switch p.name {
		case "executor":
			executorMetrics = append(executorMetrics, "http://"+httpAddr+"/metrics")
		case "intake":
			intakeMetrics = "http://" + httpAddr + "/metrics"
		case "gate":
			gateMetrics = "http://" + httpAddr + "/metrics"
		}
		cmd := exec.Command(built[p.name])
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SWITCHYARD_NATS_URL=" + url, "SWITCHYARD_POLICY=" + polFile,
			"SWITCHYARD_HTTP_ADDR=" + httpAddr, "SWITCHYARD_VENDOR=" + p.vendor,
			"SWITCHYARD_NATS_CREDS=" + natsauth.CredsFile(dataDir, natsauth.ServiceUser(p.name, p.vendor))}
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
	nc := connectAs(t, url, natsx.ClientAuth{Creds: natsauth.CredsFile(dataDir, natsauth.OperatorUser)})
	shared, err := nc.SubscribeSync(natsx.SubjectObservedAttempts)
	if err != nil {
		t.Fatal(err)
	}
	f := runWorkload(t, nc, func() int64 { return srv.Calls().Model("openai", "gpt-4o-mini").Calls })
	t.Logf("separate processes with their own credentials: %+v", f)
	// The router's credentials let it share what its verdicts taught it.
	if m, err := shared.NextMsg(5 * time.Second); err != nil || !bytes.Contains(m.Data, []byte(`"attempts":[{"vendor":`)) {
		t.Errorf("no observations shared by the router on %s: %v", natsx.SubjectObservedAttempts, err)
	}
	if f.OpenAICalls > 5 || f.ChatOK != 30 || f.Cached != 3 || f.HedgeWinners["claude-haiku-4-5"] != 3 || f.LimitedBy["gemini"] != 5 ||
		f.Quota["ok"] != 3 || len(f.Quota) != 2 {
		t.Errorf("%+v; want ≤ 5 calls to the dead vendor, 30 chat ok, 3 cached, 3 hedges won by claude-haiku-4-5, 5 calls to gemini (rpm 5), 3 of 5 quota requests ok", f)
	}

	// The edge on its own credentials: it reads the key the operator made,
	// keeps the key's rpm and in-flight counters in its own buckets, and
	// publishes and waits for the reply.
	ojs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := apikey.Open(ctx, ojs)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := keys.CreateWithLimits(ctx, "edgeco", nil, apikey.Limits{RPM: 100, MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	edgeAddr, edgeHealth := freeAddr(t), freeAddr(t)
	edge := exec.Command(built["edge"])
	edge.Env = []string{"PATH=" + os.Getenv("PATH"), "SWITCHYARD_NATS_URL=" + url, "SWITCHYARD_POLICY=" + polFile,
		"SWITCHYARD_HTTP_ADDR=" + edgeHealth, "SWITCHYARD_EDGE_ADDR=" + edgeAddr,
		"SWITCHYARD_NATS_CREDS=" + natsauth.CredsFile(dataDir, natsauth.ServiceUser("edge", ""))}
	edge.Stderr = logs.named("edge ")
	if err := edge.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = edge.Process.Kill(); _ = edge.Wait() })
	waitFor(t, 20*time.Second, func() bool { return httpOK("http://" + edgeHealth + "/healthz") })
	for i := range 3 {
		body := fmt.Sprintf(`{"model":"chat","messages":[{"role":"user","content":"edge on its own credentials %d"}]}`, i)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+edgeAddr+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("edge request %d: %d %s", i, resp.StatusCode, out)
		}
	}

	// Every result reached the gate directly: the executors may ask on
	// llm.gate.judge and the gate may answer them (allow_responses), as
	// the intake and the gate may ask on llm.router.route and
	// llm.router.verdict and the router answer.
	var direct, stream float64
	for _, u := range executorMetrics {
		direct += metricWith(t, u, "switchyard_executor_gate_handoffs_total", `path="direct"`)
		stream += metricWith(t, u, "switchyard_executor_gate_handoffs_total", `path="stream"`)
	}
	if direct == 0 || stream != 0 {
		t.Errorf("results handed to the gate: %v directly, %v on llm.results; want all directly", direct, stream)
	}
	// Every classified request reached the router directly likewise.
	direct = metricWith(t, intakeMetrics, "switchyard_intake_router_handoffs_total", `path="direct"`)
	stream = metricWith(t, intakeMetrics, "switchyard_intake_router_handoffs_total", `path="stream"`)
	if direct == 0 || stream != 0 {
		t.Errorf("classified work handed to the router: %v directly, %v on llm.classified; want all directly", direct, stream)
	}
	// And every verdict from the gate to the router.
	direct = metricWith(t, gateMetrics, "switchyard_gate_router_handoffs_total", `path="direct"`)
	stream = metricWith(t, gateMetrics, "switchyard_gate_router_handoffs_total", `path="stream"`)
	if direct == 0 || stream != 0 {
		t.Errorf("verdicts handed to the router: %v directly, %v on llm.verdicts; want all directly", direct, stream)
	}

	for _, line := range logs.all() {
		if strings.Contains(line, "Permissions Violation") || strings.Contains(line, "permissions violation") ||
			strings.Contains(line, "stream anchor not kept") {
			t.Errorf("a service was refused: %s", line)
		}
	}
	// The intake kept LLM_REQUESTS's anchor, the other stages LLM_PIPELINE's.
	for name, seq := range anchors() {
		if seq <= upAnchors[name] {
			t.Errorf("%s: anchor at sequence %d, the one `up` stored at %d: no service stored its own", name, seq, upAnchors[name])
		}
	}
}

// authServer starts an embedded NATS server on dataDir that trusts auth's
// operator (its accounts preloaded, the resolver under dataDir), as `up`
// runs it, and returns its URL.
func authServer(t *testing.T, dataDir string, auth *natsauth.Authority) string {
	t.Helper()
	op, err := auth.OperatorClaims()
	if err != nil {
		t.Fatal(err)
	}
	accounts, err := auth.AccountJWTs()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: filepath.Join(dataDir, "jetstream"),
		Auth: &natsserver.Auth{Operator: op, SystemAccount: auth.SystemAccount(), ResolverDir: natsauth.ResolverDir(dataDir), Accounts: accounts}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns.ClientURL()
}
