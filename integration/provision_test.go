package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/executor"
	"github.com/switchyard-llm/switchyard/services/gate"
	"github.com/switchyard-llm/switchyard/services/intake"
	"github.com/switchyard-llm/switchyard/services/router"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// TestProvisionCommand: `switchyard provision`, run as a process with the
// operator's credentials against an authenticated NATS that holds nothing,
// creates what every service user needs and may not create: each then
// opens its runtime, builds its stage and finds its consumer, creating
// nothing. It consumes nothing (a request published between two runs is
// still pending on the intake's consumer), a second run updates a stream
// left at an old configuration (LLM_REPLIES without its subject
// transform, as before the upgrade) in place, and bad settings exit
// non-zero with a message, creating nothing.
func TestProvisionCommand(t *testing.T) {
	bin := buildCmd(t, t.TempDir(), "switchyard", "github.com/switchyard-llm/switchyard/services/switchyard")
	pol, err := policy.Load(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	vendors := pol.VendorNames()
	dataDir := t.TempDir()
	auth, err := natsauth.LoadOrCreate(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.WriteServiceCreds(vendors); err != nil {
		t.Fatal(err)
	}
	url := authServer(t, dataDir, auth)
	opCreds := natsauth.CredsFile(dataDir, natsauth.OperatorUser)
	ojs := operatorJS(t, url, opCreds)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	garbage := filepath.Join(t.TempDir(), "garbage.creds")
	if err := os.WriteFile(garbage, []byte("not a credentials file"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{"SWITCHYARD_NATS_URL": url, "SWITCHYARD_NATS_CREDS": opCreds, "SWITCHYARD_POLICY": testPolicy, "SWITCHYARD_LOG_LEVEL": "warn"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range base {
			m[a] = b
		}
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
	}{
		{"no NATS URL", with("SWITCHYARD_NATS_URL", ""), nil, "SWITCHYARD_NATS_URL: required"},
		{"credentials file that is none", with("SWITCHYARD_NATS_CREDS", garbage), nil, "SWITCHYARD_NATS_CREDS"},
		{"credentials file missing", with("SWITCHYARD_NATS_CREDS", garbage+".missing"), nil, "SWITCHYARD_NATS_CREDS"},
		{"a service's credentials", with("SWITCHYARD_NATS_CREDS", natsauth.CredsFile(dataDir, "intake")), nil, "provision needs the operator's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := runProvisionCmd(ctx, bin, tc.env, tc.args...)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(stderr, tc.wantErr) || strings.Contains(stderr, "panic") {
				t.Errorf("exit %v, want 1 saying %q; stdout %q, stderr:\n%s", err, tc.wantErr, stdout, stderr)
			}
		})
	}
	if names := streamNames(ctx, t, ojs); slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "LLM_R") }) {
		t.Errorf("a refused run created streams: %v", names)
	}

	start := time.Now()
	stdout, stderr, err := runProvisionCmd(ctx, bin, base)
	if err != nil {
		t.Fatalf("provision: %v\n%s", err, stderr)
	}
	t.Logf("first run took %v:\n%s", time.Since(start).Round(time.Millisecond), stdout)
	want := []string{natsx.StreamRequests, natsx.StreamPipeline, natsx.StreamReplies, natsx.StreamTelemetry, natsx.StreamDLQ, natsx.StreamAlerts,
		"switchyard_policy", "switchyard_budgets", "switchyard_breakers", "switchyard_hedges", "switchyard_cache", apikey.Bucket,
		"LLM_REQUESTS/intake", "LLM_PIPELINE/router", "LLM_PIPELINE/gate", "LLM_TELEMETRY/ledger"}
	for _, v := range vendors {
		want = append(want, "LLM_PIPELINE/"+executor.ConsumerName(v))
	}
	for _, w := range want {
		if !strings.Contains(stdout, w+" ") {
			t.Errorf("the listing does not name %s", w)
		}
	}

	if _, stderr, err := runProvisionCmd(ctx, bin, base, "-vendors", "openai,acme"); err == nil || !strings.Contains(stderr, `vendor "acme" is not in the policy`) {
		t.Errorf("-vendors openai,acme: %v, want a failure naming acme; stderr:\n%s", err, stderr)
	}

	// An older deployment's LLM_REPLIES (replies published and stored on
	// llm.replies.>), and a request waiting for the intake.
	replies, err := ojs.Stream(ctx, natsx.StreamReplies)
	if err != nil {
		t.Fatal(err)
	}
	old := replies.CachedInfo().Config
	old.Subjects, old.SubjectTransform, old.RePublish = []string{natsx.SubjectReplies}, nil, nil
	if _, err := ojs.UpdateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := ojs.Publish(ctx, natsx.SubjectRequests, []byte(`{"id":"provisioned-1"}`)); err != nil {
		t.Fatal(err)
	}
	// The intake's anchor (natsx.KeepAnchor) is not work: not listed as a message.
	anchor := nats.NewMsg(natsx.AnchorSubject(natsx.StreamRequests))
	anchor.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	if _, err := ojs.PublishMsg(ctx, anchor); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err = runProvisionCmd(ctx, bin, base)
	if err != nil {
		t.Fatalf("provision again: %v\n%s", err, stderr)
	}
	if m := regexp.MustCompile(`(?m)^` + natsx.StreamRequests + `\s+R\d\s+(\d+)\s*$`).FindStringSubmatch(stdout); m == nil || m[1] != "1" {
		t.Errorf("the second run lists %s with %v messages, want 1 (the request, not its anchor):\n%s", natsx.StreamRequests, m, stdout)
	}
	info, err := replies.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tr := info.Config.SubjectTransform; tr == nil || tr.Source != natsx.SubjectReplyStore || !slices.Equal(info.Config.Subjects, []string{natsx.SubjectReplyStore}) {
		t.Errorf("the second run left LLM_REPLIES at %v %+v, want the store subject and its transform", info.Config.Subjects, tr)
	}
	cons, err := ojs.Consumer(ctx, natsx.StreamRequests, "intake")
	if err != nil {
		t.Fatal(err)
	}
	ci := cons.CachedInfo()
	if ci.NumPending != 1 || ci.NumAckPending != 0 || ci.Delivered.Consumer != 0 {
		t.Errorf("intake consumer: %d pending, %d unacked, %d delivered; want the request still pending, never delivered", ci.NumPending, ci.NumAckPending, ci.Delivered.Consumer)
	}
	if !strings.Contains(stdout, "LLM_REQUESTS/intake") {
		t.Errorf("second listing:\n%s", stdout)
	}
	// Beside `up`'s data directory, its operator's credentials are found
	// like every client command finds them.
	dataEnv := with("SWITCHYARD_DATA_DIR", dataDir)
	delete(dataEnv, "SWITCHYARD_NATS_CREDS")
	if _, stderr, err := runProvisionCmd(ctx, bin, dataEnv); err != nil {
		t.Errorf("provision with SWITCHYARD_DATA_DIR and no SWITCHYARD_NATS_CREDS: %v\n%s", err, stderr)
	}

	// Every service on its own credentials finds what it needs.
	before := streamNames(ctx, t, ojs)
	cfg, err := app.LoadConfig(envcfg.LookupMap(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	type service struct{ name, vendor, stream, consumer string }
	services := []service{{"intake", "", natsx.StreamRequests, cfg.Intake.Consumer}, {"router", "", natsx.StreamPipeline, cfg.Router.Consumer},
		{"gate", "", natsx.StreamPipeline, cfg.Gate.Consumer}, {"ledger", "", natsx.StreamTelemetry, cfg.Ledger.Consumer}, {"edge", "", "", ""}}
	for _, v := range vendors {
		services = append(services, service{"executor", v, natsx.StreamPipeline, executor.ConsumerName(v)})
	}
	for _, s := range services {
		user := natsauth.ServiceUser(s.name, s.vendor)
		t.Run(user, func(t *testing.T) {
			rt, err := svc.Open(ctx, svc.Options{Name: user, NATSURL: url, Auth: natsx.ClientAuth{Creds: natsauth.CredsFile(dataDir, user)},
				Policy: pol, Log: zerolog.Nop(), Features: cfg.Features})
			if err != nil {
				t.Fatalf("open as %s: %v", user, err)
			}
			defer rt.Close()
			var wantCfg *jetstream.ConsumerConfig
			switch s.name {
			case "intake":
				in, err := intake.FromRuntime(rt, cfg.Intake)
				if err != nil {
					t.Fatal(err)
				}
				c := in.ConsumerConfig()
				wantCfg = &c
			case "router":
				r, err := router.FromRuntime(rt, cfg.Router)
				if err != nil {
					t.Fatal(err)
				}
				c := r.ConsumerConfig()
				wantCfg = &c
			case "gate":
				g, err := gate.FromRuntime(rt, cfg.Gate)
				if err != nil {
					t.Fatal(err)
				}
				c := g.ConsumerConfig()
				wantCfg = &c
			case "ledger":
				c := cfg.Ledger.ConsumerConfig()
				wantCfg = &c
			case "executor":
				ec := cfg.Executor
				ec.Vendor = s.vendor
				c := executor.ConsumerConfigFor(ec, pol.Vendors[s.vendor])
				wantCfg = &c
			case "edge":
				// What edge.FromRuntime binds before it serves.
				if _, err := apikey.Open(ctx, rt.JS); err != nil {
					t.Fatalf("edge's key bucket: %v", err)
				}
				return
			}
			c, err := rt.JS.Consumer(ctx, s.stream, s.consumer)
			if err != nil {
				t.Fatalf("look up %s/%s as %s: %v", s.stream, s.consumer, user, err)
			}
			got := c.CachedInfo().Config
			if got.Durable != wantCfg.Durable || got.FilterSubject != wantCfg.FilterSubject || !slices.Equal(got.FilterSubjects, wantCfg.FilterSubjects) ||
				got.AckWait != wantCfg.AckWait || got.MaxDeliver != wantCfg.MaxDeliver || got.MaxAckPending != wantCfg.MaxAckPending {
				t.Errorf("%s/%s is %+v, the service's config is %+v", s.stream, s.consumer, got, *wantCfg)
			}
		})
	}
	if after := streamNames(ctx, t, ojs); !slices.Equal(before, after) {
		t.Errorf("the services created streams: before %v, after %v", before, after)
	}
}

// runProvisionCmd runs `switchyard provision` with env only (nothing
// inherited but PATH), bounded so a hang fails the test.
func runProvisionCmd(ctx context.Context, bin string, env map[string]string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"provision"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, errors.New("provision did not exit within 45s"))
	}
	return out.String(), errOut.String(), err
}

func operatorJS(t *testing.T, url, creds string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(connectAs(t, url, natsx.ClientAuth{Creds: creds}))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func streamNames(ctx context.Context, t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	lister := js.StreamNames(ctx)
	var out []string
	for n := range lister.Name() {
		out = append(out, n)
	}
	if err := lister.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}
