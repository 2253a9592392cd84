package intake

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// TestDecidePublisherIdentity: the tenant of a request published from a
// tenant's account is the one its subject binds (llm.requests.tenant.<t>,
// set by the account's import), whatever the envelope says. A mismatch is
// dead-lettered (reason tenant_mismatch) and answered policy_blocked on the
// publisher's own reply subject; nothing reaches the router, the ledger or
// the claimed tenant. Plain llm.requests (the edge, an operator) keeps the
// envelope's tenant.
func TestDecidePublisherIdentity(t *testing.T) {
	in := newTestIntake(t)
	body := `{"id":"r1","tenant":"acme",` + msgs + `}`
	tests := []struct {
		name, subject, body string
		accepted            bool
		replySubj           string // the refusal's reply ("" none)
	}{
		{"llm.requests: the edge or an operator", natsx.SubjectRequests, body, true, ""},
		{"the tenant's own subject", "llm.requests.tenant.acme", body, true, ""},
		{"another tenant's subject", "llm.requests.tenant.globex", body, false, "llm.replies.globex.r1"},
		{"another tenant, reply_to its inbox", "llm.requests.tenant.globex", `{"id":"r1","tenant":"acme","reply_to":"_INBOX.acme.x",` + msgs + `}`, false, "llm.replies.globex.r1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := in.Decide(Input{Data: []byte(tc.body), Header: nats.Header{}, Subject: tc.subject, Stream: natsx.StreamRequests, Seq: 7, Deliveries: 1, Received: testNow}, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if o.Accepted() != tc.accepted {
				t.Fatalf("accepted = %v (code %q %s), want %v", o.Accepted(), o.Code, o.Problem, tc.accepted)
			}
			out := bySubject(t, o.Out)
			replyStore, _ := natsx.ReplyPublishSubject(tc.replySubj)
			if tc.accepted {
				if _, ok := out[natsx.SubjectClassified]; !ok {
					t.Fatalf("accepted request not sent to the router: %v", out)
				}
				return
			}
			if o.Code != envelope.CodePolicyBlocked {
				t.Fatalf("code %q, want %q", o.Code, envelope.CodePolicyBlocked)
			}
			dl, ok := out[natsx.DLQSubject(natsx.StageIntake)]
			if !ok || dl.Header.Get(natsx.HeaderReason) != ReasonTenantMismatch {
				t.Fatalf("no dead letter with reason %s: %v", ReasonTenantMismatch, out)
			}
			for subj := range out {
				switch subj {
				case natsx.DLQSubject(natsx.StageIntake), replyStore:
				default:
					t.Fatalf("refusal published to %s (want only the dead letter and %q)", subj, replyStore)
				}
			}
			if tc.replySubj != "" {
				if _, ok := out[replyStore]; !ok {
					t.Fatalf("no reply on %s: %v", replyStore, out)
				}
			}
		})
	}
}
