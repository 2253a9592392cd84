package integration

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// TestTenantReadsOwnStoredReplies: a tenant who was not listening when its
// reply was published reads it from LLM_REPLIES with its own credentials
// (the direct get its account imports for its own subjects only); another
// tenant's stored reply, the stream's other messages and every other
// JetStream call are refused by the server, with no state change.
func TestTenantReadsOwnStoredReplies(t *testing.T) {
	e := start(t, withAuth)
	owner, other := e.tenant, "o"+e.tenant
	oc, xc := e.tenantClient(owner), e.tenantClient(other)
	ocl, err := client.New(oc.nc)
	if err != nil {
		t.Fatal(err)
	}
	xcl, err := client.New(xc.nc)
	if err != nil {
		t.Fatal(err)
	}
	e.consumersReady()

	subject := e.readsStoredReply(t, ocl, owner)

	before := e.stateOf()
	t.Run("refused", func(t *testing.T) {
		refusals := []struct {
			name string
			try  func(t *testing.T)
		}{
			{"another tenant's stored reply", func(t *testing.T) { xc.pub(t, natsauth.DirectGetReplies+subject, nil) }},
			{"another tenant's stored reply through the client", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				if r, err := xcl.StoredReply(ctx, subject); err == nil || r != nil {
					t.Fatalf("read %+v", r)
				}
			}},
			{"every tenant's stored replies", func(t *testing.T) { xc.pub(t, natsauth.DirectGetReplies+"llm.replies.>", nil) }},
			{"a direct get by sequence", func(t *testing.T) { xc.pub(t, "$JS.API.DIRECT.GET."+natsx.StreamReplies, []byte(`{"seq":1}`)) }},
			{"a message get", func(t *testing.T) {
				xc.pub(t, "$JS.API.STREAM.MSG.GET."+natsx.StreamReplies, []byte(`{"last_by_subj":"`+subject+`"}`))
			}},
			{"list the streams", func(t *testing.T) { xc.pub(t, "$JS.API.STREAM.NAMES", nil) }},
			{"the replies stream's info", func(t *testing.T) { xc.pub(t, "$JS.API.STREAM.INFO."+natsx.StreamReplies, nil) }},
			{"a consumer on the replies", func(t *testing.T) {
				xc.js(t, func(ctx context.Context, js jetstream.JetStream) error {
					_, err := js.OrderedConsumer(ctx, natsx.StreamReplies, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
					return err
				})
			}},
			{"the owner purges its replies", func(t *testing.T) { oc.pub(t, "$JS.API.STREAM.PURGE."+natsx.StreamReplies, nil) }},
			{"the owner's account info", func(t *testing.T) { oc.pub(t, "$JS.API.INFO", nil) }},
		}
		for _, r := range refusals {
			t.Run(r.name, r.try)
		}
		// Inside its own prefix a body naming another subject, a sequence
		// or a batch is refused by the stream: the subject requested is
		// the only one read.
		for _, body := range []string{
			`{"last_by_subj":"` + subject + `"}`, `{"next_by_subj":"` + subject + `"}`, `{"seq":1}`,
			`{"multi_last":["llm.replies.>"]}`, `{"batch":10}`,
		} {
			t.Run("own prefix with "+body, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				m, err := xc.nc.RequestWithContext(ctx, natsauth.DirectGetReplies+"llm.replies."+other+".x", []byte(body))
				if err != nil {
					t.Fatal(err)
				}
				if st := m.Header.Get("Status"); st != "408" || len(m.Data) != 0 {
					t.Fatalf("status %q, %d bytes (%s), want 408 and nothing", st, len(m.Data), m.Data)
				}
			})
		}
		t.Run("a wildcard in its own prefix", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if r, err := xcl.StoredReply(ctx, "llm.replies."+other+".>"); !errors.Is(err, client.ErrNoStoredReply) {
				t.Fatalf("%+v %v, want none stored for %s", r, err, other)
			}
		})
	})
	after := e.stateOf()
	for name, seq := range before {
		if strings.HasSuffix(name, " anchor") {
			continue
		}
		seq += anchorWrites(before[name+" anchor"], after[name+" anchor"])
		if after[name] != seq {
			t.Errorf("%s: last sequence %d after the refusals, want %d", name, after[name], seq)
		}
	}
}

// TestStoredReplyWithoutAuth: with authentication off the client reads a
// stored reply the same way (the stream's direct get in the one account).
func TestStoredReplyWithoutAuth(t *testing.T) {
	e := start(t)
	e.readsStoredReply(t, e.client, e.tenant)
}

// readsStoredReply publishes a request as tenant without listening, waits
// until its reply is stored, and reads it with the client's stored read,
// Reply and a waiter subscribed after the fact. It returns the reply's
// subject.
func (e *env) readsStoredReply(t *testing.T, cl *client.Client, tenant string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := e.request("st1", "chat", "keep it for me")
	req.Tenant = tenant
	if err := cl.Publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	subject := envelope.DefaultReplySubject(tenant, "st1")
	replies, err := e.sys.JS.Stream(ctx, natsx.StreamReplies)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool {
		_, err := replies.GetLastMsgForSubject(ctx, subject)
		return err == nil
	})
	reads := []struct {
		name string
		read func(ctx context.Context) (*envelope.Reply, error)
	}{
		{"StoredReply", func(ctx context.Context) (*envelope.Reply, error) { return cl.StoredReply(ctx, subject) }},
		{"Reply", func(ctx context.Context) (*envelope.Reply, error) { return cl.Reply(ctx, tenant, "st1") }},
		{"a waiter subscribed after the reply", func(ctx context.Context) (*envelope.Reply, error) {
			w, err := cl.Await(subject)
			if err != nil {
				return nil, err
			}
			defer w.Close()
			return w.Wait(ctx)
		}},
	}
	for _, r := range reads {
		t.Run("stored reply by "+r.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := r.read(ctx)
			if err != nil || got.ID != "st1" || got.Tenant != tenant || got.Status != envelope.StatusOK {
				t.Fatalf("%+v %v, want %s's ok reply to st1", got, err, tenant)
			}
		})
	}
	return subject
}

// TestSubmitAgainReadsStoredReply: `switchyard submit` of a request whose
// reply was already published (the same id again: the intake drops the
// duplicate, so no live reply comes) prints the stored reply instead of
// waiting for one, with a tenant's credentials and with the operator's.
func TestSubmitAgainReadsStoredReply(t *testing.T) {
	e := start(t, withAuth)
	cases := []struct {
		name, id string
		env      map[string]string
	}{
		{"tenant credentials", "again1", map[string]string{"SWITCHYARD_NATS_CREDS": e.tenantCreds(e.tenant)}},
		{"operator credentials", "again2", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"submit", "-tenant", e.tenant, "-id", c.id, "-route", "chat", "-prompt", "hello"}
			if code, out, errOut := e.runCLI(c.env, append(args, "-wait", "30s")...); code != 0 {
				t.Fatalf("first submit: exit %d: %s%s", code, out, errOut)
			}
			began := time.Now()
			code, out, errOut := e.runCLI(c.env, append(args, "-wait", "5s")...)
			var r envelope.Reply
			if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.ID != c.id || r.Status != envelope.StatusOK {
				t.Fatalf("submit again: exit %d after %v: %s%s", code, time.Since(began), out, errOut)
			}
		})
	}
	// Naming another tenant: the refusal comes on the credentials' own
	// subject; the claimed tenant's stored reply is refused and not waited on.
	t.Run("tenant credentials naming another tenant", func(t *testing.T) {
		env := map[string]string{"SWITCHYARD_NATS_CREDS": e.tenantCreds("i" + e.tenant)}
		code, out, errOut := e.runCLI(env, "submit", "-tenant", e.tenant, "-id", "imp1", "-prompt", "charge them", "-wait", "10s")
		var r envelope.Reply
		if code == 0 || json.Unmarshal([]byte(out), &r) != nil || r.Error == nil || r.Error.Code != envelope.CodePolicyBlocked || r.Tenant != "i"+e.tenant {
			t.Fatalf("exit %d: %s%s, want the policy_blocked refusal to i%s", code, out, errOut, e.tenant)
		}
	})
}
