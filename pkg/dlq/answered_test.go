package dlq

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A request is answered once; a second, final answer only on -reanswer,
// and only after an error that may pass now. One still in flight is never
// replayed.
func TestReplayRefusal(t *testing.T) {
	ok := &envelope.Reply{Status: envelope.StatusOK}
	retryable := &envelope.Reply{Status: envelope.StatusError, Error: &envelope.Error{Code: envelope.CodeAllVendorsFailed, Retryable: true}}
	final := &envelope.Reply{Status: envelope.StatusError, Error: &envelope.Error{Code: envelope.CodeInvalidRequest}}
	const subject = "llm.replies.acme.r1"
	patch := json.RawMessage(`{"colour":null}`)
	tests := []struct {
		name string
		a    answer
		o    ReplayOptions
		want string // "" replays; else a prefix of the refusal
	}{
		{"no id or tenant: nobody answered", answer{}, ReplayOptions{}, ""},
		{"in flight", answer{subject: subject}, ReplayOptions{}, "not answered yet"},
		{"in flight, reanswer", answer{subject: subject}, ReplayOptions{Reanswer: true}, "not answered yet"},
		{"ok", answer{subject: subject, stored: ok}, ReplayOptions{}, "already answered: ok"},
		{"ok, reanswer and patch", answer{subject: subject, stored: ok}, ReplayOptions{Reanswer: true, Patch: patch}, "already answered: ok"},
		{"retryable", answer{subject: subject, stored: retryable}, ReplayOptions{}, "already answered: all_vendors_failed (retryable)"},
		{"retryable, dry run", answer{subject: subject, stored: retryable}, ReplayOptions{DryRun: true}, "already answered"},
		{"retryable, reanswer", answer{subject: subject, stored: retryable}, ReplayOptions{Reanswer: true}, ""},
		{"final, reanswer", answer{subject: subject, stored: final}, ReplayOptions{Reanswer: true}, "already answered: invalid_request (final)"},
		{"final, patch", answer{subject: subject, stored: final}, ReplayOptions{Patch: patch}, "already answered: invalid_request (final)"},
		{"final, reanswer and patch", answer{subject: subject, stored: final}, ReplayOptions{Reanswer: true, Patch: patch}, ""},
		{"core reply_to", answer{subject: "_INBOX.acme.x", core: true}, ReplayOptions{}, "already answered on _INBOX.acme.x"},
		{"core reply_to before its deadline, reanswer", answer{subject: "_INBOX.acme.x", core: true, coreInFlight: true}, ReplayOptions{Reanswer: true}, "not answered yet"},
		{"core reply_to, reanswer", answer{subject: "_INBOX.acme.x", core: true}, ReplayOptions{Reanswer: true}, ""},
		{"reply aged out", answer{subject: subject, expired: true}, ReplayOptions{}, "already answered (the reply has aged out"},
		{"reply aged out, reanswer", answer{subject: subject, expired: true}, ReplayOptions{Reanswer: true}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.a.refusal(tt.o)
			if (tt.want == "") != (got == "") || !strings.HasPrefix(got, tt.want) {
				t.Fatalf("refusal = %q, want %q", got, tt.want)
			}
		})
	}
}

// The reply a replay looks up is the one the request was answered on: its
// reply_to when valid, the default subject otherwise, and its publisher's
// own subject when it named another tenant.
func TestAnswerOfFindsTheReplySubject(t *testing.T) {
	_, js := testkit.JetStream(t)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, subject := range []string{"llm.replies.acme.r1", "llm.replies.acme.mine", "llm.replies.pub.r2"} {
		stored, _ := natsx.ReplyPublishSubject(subject)
		if _, err := js.Publish(ctx, stored, []byte(`{"status":"ok"}`)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, orig, payload string
		want                string
		stored              bool
	}{
		{"default subject", natsx.SubjectRequests, `{"id":"r1","tenant":"acme"}`, "llm.replies.acme.r1", true},
		{"reply_to", natsx.SubjectRequests, `{"id":"r1","tenant":"acme","reply_to":"llm.replies.acme.mine"}`, "llm.replies.acme.mine", true},
		{"invalid reply_to", natsx.SubjectRequests, `{"id":"r1","tenant":"acme","reply_to":"llm.exec.openai"}`, "llm.replies.acme.r1", true},
		{"another tenant's request", natsx.SubjectTenantRequestsPrefix + "pub", `{"id":"r2","tenant":"acme"}`, "llm.replies.pub.r2", true},
		{"not answered yet", natsx.SubjectRequests, `{"id":"r9","tenant":"acme"}`, "llm.replies.acme.r9", false},
		{"no tenant", natsx.SubjectRequests, `{"id":"r1"}`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Entry{Data: []byte(tt.payload), Header: nats.Header{natsx.HeaderOrigSubject: {tt.orig}}, FailedAt: time.Now()}
			a, err := e.answerOf(ctx, js)
			if err != nil || a.subject != tt.want || (a.stored != nil) != tt.stored {
				t.Fatalf("answer on %q, stored %v (%v); want %q, stored %v", a.subject, a.stored != nil, err, tt.want, tt.stored)
			}
		})
	}
}
