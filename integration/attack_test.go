package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/services/intake"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// withAuth runs the system as `up` does by default: NATS identities on.
func withAuth(c *app.Config) { c.NATSAuth = app.AuthOn }

// busClient is a connection with someone's credentials that records what
// the server refused it.
type busClient struct {
	name string
	nc   *nats.Conn
	errs chan error
}

// credsDir is where `up` wrote the operator's, sys's and the services'
// credentials.
func (e *env) credsDir() string { return filepath.Dir(e.sys.OperatorCreds) }

// tenantClient issues a tenant's credentials as `switchyard tenants
// create` does (sign, push the account through the system user) and
// connects with them.
func (e *env) tenantClient(tenant string) *busClient {
	e.t.Helper()
	return e.dial(tenant, e.tenantCreds(tenant))
}

// tenantCreds issues a tenant's credentials file.
func (e *env) tenantCreds(tenant string) string {
	e.t.Helper()
	creds, _, err := e.sys.Auth.CreateTenant(tenant, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	opts, err := natsx.ClientAuth{Creds: filepath.Join(e.credsDir(), "sys.creds"), TLSCA: e.sys.ClientAuth.TLSCA}.Options()
	if err != nil {
		e.t.Fatal(err)
	}
	sys, err := nats.Connect(e.sys.NATSURL, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	defer sys.Close()
	if err := e.sys.Auth.PushTenant(sys, tenant); err != nil {
		e.t.Fatal(err)
	}
	file := filepath.Join(e.t.TempDir(), tenant+".creds")
	if err := os.WriteFile(file, creds, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return file
}

// dial connects with a credentials file the way every Switchyard process
// does (natsx.ClientAuth: a service user gets its private inbox prefix).
func (e *env) dial(name, credsFile string) *busClient {
	e.t.Helper()
	opts, err := natsx.ClientAuth{Creds: credsFile, TLSCA: e.sys.ClientAuth.TLSCA}.Options()
	if err != nil {
		e.t.Fatal(err)
	}
	c := &busClient{name: name, errs: make(chan error, 256)}
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case c.errs <- err:
		default:
		}
	}))
	if c.nc, err = nats.Connect(e.sys.NATSURL, opts...); err != nil {
		e.t.Fatalf("%s connects: %v", name, err)
	}
	e.t.Cleanup(c.nc.Close)
	return c
}

// refused waits for the server's permission violation naming subject.
func (c *busClient) refused(t *testing.T, kind, subject string) {
	t.Helper()
	want := "Permissions Violation for " + kind + ` to "` + subject
	if !strings.HasSuffix(subject, ".") {
		want += `"`
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if strings.Contains(err.Error(), want) {
				return
			}
		case <-deadline:
			t.Fatalf("%s: the server did not refuse: no %q", c.name, want)
		}
	}
}

// pub publishes and expects the server to refuse it.
func (c *busClient) pub(t *testing.T, subject string, data []byte) {
	t.Helper()
	if err := c.nc.Publish(subject, data); err != nil {
		t.Fatal(err)
	}
	_ = c.nc.Flush()
	c.refused(t, "Publish", subject)
}

// sub subscribes and expects the server to refuse it; nothing may arrive.
func (c *busClient) sub(t *testing.T, subject string) {
	t.Helper()
	s, err := c.nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Unsubscribe() }()
	_ = c.nc.Flush()
	c.refused(t, "Subscription", subject)
}

// js runs a JetStream call and expects it to fail on the server's
// refusal to let it publish to the JetStream API (the violation may reach
// the client only asynchronously, the call then times out).
func (c *busClient) js(t *testing.T, call func(ctx context.Context, js jetstream.JetStream) error) {
	t.Helper()
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err = call(ctx, js); err == nil {
		t.Fatalf("%s: the JetStream call succeeded", c.name)
	}
	if strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
		return
	}
	c.refused(t, "Publish", "$JS.API.")
}

// stateOf is what an attack must not change: the messages of every
// bucket and pipeline stream, and which streams and consumers exist.
func (e *env) stateOf() map[string]uint64 {
	e.t.Helper()
	ctx := context.Background()
	out := map[string]uint64{}
	for _, name := range []string{"KV_switchyard_policy", "KV_switchyard_budgets", "KV_switchyard_breakers", "KV_switchyard_cache",
		natsx.StreamRequests, natsx.StreamPipeline, natsx.StreamReplies, natsx.StreamTelemetry, natsx.StreamDLQ, natsx.StreamAlerts} {
		s, err := e.sys.JS.Stream(ctx, name)
		if err != nil {
			e.t.Fatalf("stream %s: %v", name, err)
		}
		// A new anchor (natsx.KeepAnchor) is not a write of the attacks.
		out[name] = s.CachedInfo().State.LastSeq
		out[name+" anchor"] = anchorSeq(ctx, s)
		for _, cons := range pipelineConsumers[name] {
			if _, err := s.Consumer(ctx, cons); err != nil {
				e.t.Fatalf("consumer %s/%s: %v", name, cons, err)
			}
		}
	}
	return out
}

var pipelineConsumers = map[string][]string{natsx.StreamRequests: {"intake"}, natsx.StreamPipeline: {"router", "gate", "exec-openai"}, natsx.StreamTelemetry: {"ledger"}}

// consumersReady waits for every stage's consumer (the ledger creates its
// own once ClickHouse is migrated).
func (e *env) consumersReady() {
	e.t.Helper()
	waitFor(e.t, 30*time.Second, func() bool {
		for stream, list := range pipelineConsumers {
			for _, c := range list {
				if _, err := e.sys.JS.Consumer(context.Background(), stream, c); err != nil {
					return false
				}
			}
		}
		return true
	})
}

// TestAttacksRefused tries, with a tenant's credentials and with the
// services' own, every abuse issue 10 found on an open bus, and asserts
// each is refused by the server (a permission violation) or by the intake
// (a request naming another tenant), with no vendor call, no ledger row
// and no change to any bucket, stream or consumer; then the same
// credentials run the legitimate flow.
func TestAttacksRefused(t *testing.T) {
	e := start(t, withAuth)
	victim, mallory := e.tenant, "m"+e.tenant
	vc, mc := e.tenantClient(victim), e.tenantClient(mallory)
	gate := e.dial("gate", filepath.Join(e.credsDir(), "gate.creds"))
	router := e.dial("router", filepath.Join(e.credsDir(), "router.creds"))

	// Eve, a tenant who sends nothing, listens on everything her account
	// may read: anything arriving there leaked from another tenant or the
	// pipeline.
	eve := e.tenantClient("e" + e.tenant)
	var leaks []*nats.Subscription
	for _, subj := range []string{"_INBOX.>", "llm.replies.e" + e.tenant + ".>", "llm.deltas.e" + e.tenant + ".>"} {
		s, err := eve.nc.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		leaks = append(leaks, s)
	}
	forged, _ := json.Marshal(map[string]any{"key": victim + ".f1", "request": map[string]any{"id": "f1", "tenant": victim, "model": "openai/gpt-5-secret", "max_tokens": 9999999,
		"messages": []map[string]string{{"role": "user", "content": "hi"}}}})
	telemetry := []byte(`{"request_id":"f1","tenant":"` + victim + `","cost_usd":2500}`)
	reply := []byte(`{"id":"v1","tenant":"` + victim + `","status":"ok","content":"forged"}`)
	policyOpen := []byte("version: pwned\n")
	e.consumersReady()
	before := e.stateOf()
	callsBefore := e.sys.Sim.Calls().Total

	attacks := []struct {
		name string
		who  *busClient
		try  func(t *testing.T, c *busClient)
	}{
		{"read another tenant's replies live", mc, func(t *testing.T, c *busClient) { c.sub(t, "llm.replies."+victim+".>") }},
		{"read every reply live", mc, func(t *testing.T, c *busClient) { c.sub(t, "llm.replies.>") }},
		{"read replies from the stream", mc, func(t *testing.T, c *busClient) {
			c.js(t, func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.OrderedConsumer(ctx, natsx.StreamReplies, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"llm.replies." + victim + ".>"}})
				return err
			})
		}},
		{"read another tenant's stored reply", mc, func(t *testing.T, c *busClient) {
			c.pub(t, natsauth.DirectGetReplies+envelope.DefaultReplySubject(victim, "ok1"), nil)
		}},
		{"read the prompts on llm.exec", mc, func(t *testing.T, c *busClient) { c.sub(t, "llm.exec.>") }},
		{"read the dead letters", mc, func(t *testing.T, c *busClient) {
			c.js(t, func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.Stream(ctx, natsx.StreamDLQ)
				return err
			})
		}},
		{"read the response cache", mc, func(t *testing.T, c *busClient) {
			c.js(t, func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.KeyValue(ctx, "switchyard_cache")
				return err
			})
		}},
		{"forge work for an executor", mc, func(t *testing.T, c *busClient) { c.pub(t, "llm.exec.openai", forged) }},
		{"forge classified work", mc, func(t *testing.T, c *busClient) { c.pub(t, "llm.classified", forged) }},
		{"forge a result for the gate", mc, func(t *testing.T, c *busClient) { c.pub(t, natsx.SubjectGateJudge, forged) }},
		{"read results handed to the gate", mc, func(t *testing.T, c *busClient) { c.sub(t, natsx.SubjectGateJudge) }},
		{"forge classified work for the router", mc, func(t *testing.T, c *busClient) { c.pub(t, natsx.SubjectRouterRoute, forged) }},
		{"read classified work handed to the router", mc, func(t *testing.T, c *busClient) { c.sub(t, natsx.SubjectRouterRoute) }},
		{"forge a verdict for the router", mc, func(t *testing.T, c *busClient) { c.pub(t, natsx.SubjectRouterVerdict, forged) }},
		{"read verdicts handed to the router", mc, func(t *testing.T, c *busClient) { c.sub(t, natsx.SubjectRouterVerdict) }},
		{"forge telemetry", mc, func(t *testing.T, c *busClient) { c.pub(t, natsx.SubjectRequest, telemetry) }},
		{"forge a reply to another tenant", mc, func(t *testing.T, c *busClient) { c.pub(t, "llm.replies."+victim+".v1", reply) }},
		{"kv put policy", mc, func(t *testing.T, c *busClient) { c.pub(t, "$KV.switchyard_policy.current", policyOpen) }},
		{"kv put budgets", mc, func(t *testing.T, c *busClient) { c.pub(t, "$KV.switchyard_budgets."+victim, []byte("0")) }},
		{"kv put breakers", mc, func(t *testing.T, c *busClient) {
			c.pub(t, "$KV.switchyard_breakers.openai", []byte(`{"open_until":"2099-01-01T00:00:00Z"}`))
		}},
		{"kv put cache", mc, func(t *testing.T, c *busClient) { c.pub(t, "$KV.switchyard_cache.x", reply) }},
		{"delete the intake consumer", mc, func(t *testing.T, c *busClient) { c.pub(t, "$JS.API.CONSUMER.DELETE.LLM_REQUESTS.intake", nil) }},
		{"delete a stream", mc, func(t *testing.T, c *busClient) { c.pub(t, "$JS.API.STREAM.DELETE.LLM_PIPELINE", nil) }},
		{"answer the pipeline's publish acks", mc, func(t *testing.T, c *busClient) { c.sub(t, natsauth.ServiceInboxPrefix(natsauth.OperatorUser)+".>") }},
		// A service's credentials are no master key either.
		{"gate forges executor work", gate, func(t *testing.T, c *busClient) { c.pub(t, "llm.exec.openai", forged) }},
		{"gate forges request telemetry", gate, func(t *testing.T, c *busClient) { c.pub(t, natsx.SubjectRequest, telemetry) }},
		// The gate announces attempts on core NATS only; the ledger's rows are the router's to send.
		{"gate forges attempt telemetry", gate, func(t *testing.T, c *busClient) { c.pub(t, natsx.SubjectAttempt, telemetry) }},
		{"gate forges a reply", gate, func(t *testing.T, c *busClient) { c.pub(t, "llm.replies."+victim+".v1", reply) }},
		{"gate forges a reply through the stream", gate, func(t *testing.T, c *busClient) { c.pub(t, "llm.store.replies."+victim+".v1", reply) }},
		{"tenant forges a reply through the stream", mc, func(t *testing.T, c *busClient) { c.pub(t, "llm.store.replies."+victim+".v1", reply) }},
		// Only LLM_REPLIES delivers replies, once stored: not even the
		// router publishes where clients listen.
		{"router answers live, unstored", router, func(t *testing.T, c *busClient) { c.pub(t, "llm.replies."+victim+".v1", reply) }},
		{"gate writes the policy", gate, func(t *testing.T, c *busClient) { c.pub(t, "$KV.switchyard_policy.current", policyOpen) }},
		{"gate reads telemetry", gate, func(t *testing.T, c *busClient) {
			c.pub(t, "$JS.API.CONSUMER.MSG.NEXT.LLM_TELEMETRY.ledger", nil)
		}},
		{"router deletes the intake consumer", router, func(t *testing.T, c *busClient) { c.pub(t, "$JS.API.CONSUMER.DELETE.LLM_REQUESTS.intake", nil) }},
		{"router purges the replies", router, func(t *testing.T, c *busClient) { c.pub(t, "$JS.API.STREAM.PURGE.LLM_REPLIES", nil) }},
		{"router judges in the gate's place", router, func(t *testing.T, c *busClient) { c.sub(t, natsx.SubjectGateJudge) }},
		{"gate routes in the router's place", gate, func(t *testing.T, c *busClient) { c.sub(t, natsx.SubjectRouterRoute) }},
		{"gate decides in the router's place", gate, func(t *testing.T, c *busClient) { c.sub(t, natsx.SubjectRouterVerdict) }},
		{"gate forges classified work", gate, func(t *testing.T, c *busClient) { c.pub(t, natsx.SubjectRouterRoute, forged) }},
		// The gate answers the requests it receives (allow_responses), no more.
		{"gate writes to an executor's inbox", gate, func(t *testing.T, c *busClient) {
			c.pub(t, natsauth.ServiceInboxPrefix(natsauth.ServiceUser("executor", "openai"))+".x", reply)
		}},
		{"router answers another's acks", router, func(t *testing.T, c *busClient) { c.sub(t, natsauth.ServiceInboxPrefix("intake")+".>") }},
		{"router reads tenants' core inboxes", router, func(t *testing.T, c *busClient) { c.sub(t, "_INBOX.>") }},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) { a.try(t, a.who) })
	}

	// A tenant publishing as another: the intake refuses it on the
	// publisher's own reply subject, dead-letters it, tells the victim
	// nothing.
	t.Run("publish as another tenant", func(t *testing.T) {
		victimSees, err := client.New(vc.nc)
		if err != nil {
			t.Fatal(err)
		}
		vw, err := victimSees.Await("llm.replies." + victim + ".imp1")
		if err != nil {
			t.Fatal(err)
		}
		defer vw.Close()
		mcl, err := client.New(mc.nc)
		if err != nil {
			t.Fatal(err)
		}
		mw, err := mcl.Await("llm.replies." + mallory + ".imp1")
		if err != nil {
			t.Fatal(err)
		}
		defer mw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req := e.request("imp1", "chat", "charge it to them")
		req.Tenant = victim
		if err := mcl.Publish(ctx, req); err != nil {
			t.Fatal(err)
		}
		r, err := mw.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != envelope.StatusError || r.Error == nil || r.Error.Code != envelope.CodePolicyBlocked || r.Tenant != mallory {
			t.Fatalf("impersonation answered %+v, want policy_blocked to %s", r, mallory)
		}
		last, err := e.sys.JS.Stream(ctx, natsx.StreamDLQ)
		if err != nil {
			t.Fatal(err)
		}
		dl, err := last.GetLastMsgForSubject(ctx, natsx.DLQSubject(natsx.StageIntake))
		if err != nil || dl.Header.Get(natsx.HeaderReason) != intake.ReasonTenantMismatch {
			t.Fatalf("no %s dead letter: %v %v", intake.ReasonTenantMismatch, dl, err)
		}
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancelShort()
		if r, err := vw.Wait(short); err == nil {
			t.Fatalf("the impersonated tenant got %+v", r)
		}
	})

	e.settled(10 * time.Second)
	if got := e.sys.Sim.Calls().Total; got != callsBefore {
		t.Errorf("attacks reached a vendor: %d calls", got-callsBefore)
	}
	after := e.stateOf()
	for name, seq := range before {
		if strings.HasSuffix(name, " anchor") {
			continue
		}
		seq += anchorWrites(before[name+" anchor"], after[name+" anchor"])
		want := seq
		switch name {
		case natsx.StreamDLQ, natsx.StreamRequests:
			want++ // the impersonation's request and its dead letter
		case natsx.StreamReplies:
			want++ // its refusal, to the impersonator
		}
		if after[name] != want {
			t.Errorf("%s: last sequence %d after the attacks, want %d", name, after[name], want)
		}
	}

	// The same credentials work for what they are for.
	t.Run("legitimate flow", func(t *testing.T) {
		for _, c := range []struct {
			who    *busClient
			tenant string
		}{{vc, victim}, {mc, mallory}} {
			cl, err := client.New(c.who.nc)
			if err != nil {
				t.Fatal(err)
			}
			w, err := cl.Await("llm.replies." + c.tenant + ".ok1")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			req := e.request("ok1", "chat", "hello")
			req.Tenant = c.tenant
			if err := cl.Publish(ctx, req); err != nil {
				t.Fatal(err)
			}
			r, err := w.Wait(ctx)
			cancel()
			w.Close()
			if err != nil || r.Status != envelope.StatusOK {
				t.Fatalf("%s's own request: %+v %v", c.tenant, r, err)
			}
		}
		// A core request-reply on the tenant's own inbox space.
		inbox := "_INBOX." + victim + ".direct"
		w, err := func() (*client.Waiter, error) { cl, _ := client.New(vc.nc); return cl.Await(inbox) }()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req := e.request("ok2", "chat", "reply to my inbox")
		req.Tenant, req.ReplyTo = victim, inbox
		cl, _ := client.New(vc.nc)
		if err := cl.Publish(ctx, req); err != nil {
			t.Fatal(err)
		}
		if r, err := w.Wait(ctx); err != nil || r.Status != envelope.StatusOK {
			t.Fatalf("reply on %s: %+v %v", inbox, r, err)
		}
		for _, l := range leaks {
			if m, err := l.NextMsg(100 * time.Millisecond); err == nil {
				t.Errorf("a tenant who sent nothing received %s", m.Subject)
			}
		}
		q := "SELECT count() FROM %s.requests FINAL WHERE tenant IN ('" + victim + "','" + mallory + "')"
		if got := e.eventually(q, 3, 30*time.Second); got != 3 {
			t.Fatalf("ledger rows for the two tenants: %d, want 3 (the legitimate requests only)", got)
		}
	})
}
