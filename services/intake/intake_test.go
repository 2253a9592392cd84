package intake

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/dlq"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newTestIntake builds an intake for Decide: Decide does no I/O, so it
// needs neither NATS nor JetStream.
func newTestIntake(t *testing.T) *Intake {
	t.Helper()
	pol, err := policy.Load("../../deployments/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v, err := envelope.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Consumer: "intake", ConsumerSettings: pipeline.ConsumerSettings{Concurrency: 1, MaxDeliver: 5, AckWait: 30 * time.Second, MaxAckPending: 1}, DefaultTimeout: 30 * time.Second, DedupeWindow: 10 * time.Minute}
	return &Intake{cfg: cfg, d: Deps{Log: zerolog.Nop(), Policy: pol, Validator: v, Now: func() time.Time { return testNow }}}
}

func decide(t *testing.T, in *Intake, body string, hdr nats.Header) Outcome {
	t.Helper()
	if hdr == nil {
		hdr = nats.Header{}
	}
	o, err := in.Decide(Input{Data: []byte(body), Header: hdr, Subject: natsx.SubjectRequests, Stream: natsx.StreamRequests, Seq: 7, Deliveries: 1, Received: testNow}, testNow)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return o
}

// bySubject indexes the outbound messages; a subject published twice fails.
func bySubject(t *testing.T, out []Message) map[string]Message {
	t.Helper()
	m := map[string]Message{}
	for _, msg := range out {
		if _, dup := m[msg.Subject]; dup {
			t.Fatalf("two messages to %s", msg.Subject)
		}
		m[msg.Subject] = msg
	}
	return m
}

const msgs = `"messages":[{"role":"user","content":"hi"}]`

// TestDecideRefusals: every refused input gets its code and a message
// naming the problem in an error reply (when id and tenant are readable),
// a request event, and a dead letter that fits the DLQ; nothing reaches the
// router or an internal subject.
func TestDecideRefusals(t *testing.T) {
	in := newTestIntake(t)
	big := `{"id":"big1","tenant":"acme",` + msgs + `,"user":"` + strings.Repeat("x", 1_000_000-83) + `"}`
	tests := []struct {
		name, body    string
		code, problem string
		replySubject  string // "" when nobody can be replied to
	}{
		{"near NATS's 1 MiB limit", big, envelope.CodePayloadTooLarge, "the limit is 262144", "llm.replies.acme.big1"},
		{"byte order mark", "\xEF\xBB\xBF{\"id\":\"r1\",\"tenant\":\"acme\"," + msgs + "}", envelope.CodeInvalidRequest, "byte order mark", "llm.replies.acme.r1"},
		{"trailing bytes", `{"id":"r1","tenant":"acme",` + msgs + `}}`, envelope.CodeInvalidRequest, "after the JSON object", "llm.replies.acme.r1"},
		{"10000 levels", `{"id":"r1","tenant":"acme","metadata":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`, envelope.CodeInvalidRequest, "deeper than 64 levels", "llm.replies.acme.r1"},
		{"reply_to an executor subject", `{"id":"r1","tenant":"acme","reply_to":"llm.exec.openai",` + msgs + `}`, envelope.CodeInvalidRequest, "reply_to", "llm.replies.acme.r1"},
		{"reply_to another tenant", `{"id":"r1","tenant":"acme","reply_to":"llm.replies.globex.r1",` + msgs + `}`, envelope.CodeInvalidRequest, "reply_to", "llm.replies.acme.r1"},
		{"refusal goes to a valid reply_to", `{"id":"r1","tenant":"acme","reply_to":"llm.replies.acme.inbox","colour":"red",` + msgs + `}`, envelope.CodeInvalidRequest, "colour", "llm.replies.acme.inbox"},
		{"response schema does not compile", `{"id":"r1","tenant":"acme","route":"extract","response_format":{"type":"json_schema","json_schema":{"schema":{"type":12}}},` + msgs + `}`, envelope.CodeInvalidRequest, "response_format/json_schema/schema: does not compile", "llm.replies.acme.r1"},
		{"max_cost_usd 0", `{"id":"r1","tenant":"acme","policy":{"max_cost_usd":0},` + msgs + `}`, envelope.CodeInvalidRequest, "omit it for no cost limit", "llm.replies.acme.r1"},
		{"no identity", `{"tenant":"acme",` + msgs + `}`, envelope.CodeInvalidRequest, "id", ""},
		{"not JSON", `{{`, envelope.CodeInvalidRequest, "not valid JSON", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := decide(t, in, tc.body, nil)
			if o.Code != tc.code || !strings.Contains(o.Problem, tc.problem) {
				t.Fatalf("got %s %q, want %s containing %q", o.Code, o.Problem, tc.code, tc.problem)
			}
			out := bySubject(t, o.Out)
			for s := range out {
				if strings.HasPrefix(s, "llm.exec.") || s == natsx.SubjectClassified {
					t.Errorf("refused request published to %s", s)
				}
			}
			dl, ok := out[natsx.DLQSubject(natsx.StageIntake)]
			if !ok {
				t.Fatal("no dead letter")
			}
			if size := len(dl.Data) + 4096; size > 1<<20 || len(dl.Data) > dlq.MaxPayloadBytes {
				t.Errorf("dead letter payload %d bytes does not fit", len(dl.Data))
			}
			if dl.Header.Get(natsx.HeaderReason) != tc.code || dl.Header.Get(natsx.HeaderOrigSubject) != natsx.SubjectRequests {
				t.Errorf("dead letter headers %v", dl.Header)
			}
			if len(tc.body) > dlq.MaxPayloadBytes && dl.Header.Get(dlq.HeaderTruncated) != "1000000" {
				t.Errorf("truncated dead letter says %q, want the original size 1000000", dl.Header.Get(dlq.HeaderTruncated))
			}
			if tc.replySubject == "" {
				if len(o.Out) != 1 || o.Key != "" {
					t.Fatalf("unidentified request: want only the dead letter, got %d messages, key %q", len(o.Out), o.Key)
				}
				return
			}
			store, _ := natsx.ReplyPublishSubject(tc.replySubject)
			reply, ok := out[store]
			if !ok {
				t.Fatalf("no reply on %s; published %v", tc.replySubject, subjects(o.Out))
			}
			var r envelope.Reply
			if err := json.Unmarshal(reply.Data, &r); err != nil {
				t.Fatal(err)
			}
			if r.Status != envelope.StatusError || r.Error == nil || r.Error.Code != tc.code || r.Error.Message != o.Problem {
				t.Errorf("reply %+v", r)
			}
			if reply.MsgID != o.Key+":refused:7:reply" || !strings.HasPrefix(o.Key, "acme.") {
				t.Errorf("reply msg id %q, key %q: want a tenant-scoped key", reply.MsgID, o.Key)
			}
			var ev envelope.RequestEvent
			if err := json.Unmarshal(out[natsx.SubjectRequest].Data, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.ErrorCode != tc.code || ev.TraceID == "" || ev.TraceID != o.TraceID {
				t.Errorf("request event %+v, trace %q", ev, o.TraceID)
			}
		})
	}
}

func subjects(out []Message) []string {
	var s []string
	for _, m := range out {
		s = append(s, m.Subject)
	}
	return s
}

// TestDecideKeys: the delivery key (prefix of every downstream Nats-Msg-Id)
// is scoped by tenant, whatever Nats-Msg-Id the client set; a replay's key
// comes from Switchyard-Dedupe-Key.
func TestDecideKeys(t *testing.T) {
	in := newTestIntake(t)
	body := func(tenant string) string { return `{"id":"r1","tenant":"` + tenant + `","route":"chat",` + msgs + `}` }
	tests := []struct {
		name, tenant string
		hdr          nats.Header
		key          string
	}{
		{"no msg id", "acme", nil, "acme.r1"},
		{"msg id = bare id", "acme", nats.Header{natsx.HeaderMsgID: {"r1"}}, "acme.r1"},
		{"other tenant, msg id = bare id", "globex", nats.Header{natsx.HeaderMsgID: {"r1"}}, "globex.r1"},
		{"replay", "acme", nats.Header{natsx.HeaderDedupeKey: {"r1:replay:9"}}, "acme.r1:replay:9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := decide(t, in, body(tc.tenant), tc.hdr)
			if !o.Accepted() || o.Key != tc.key {
				t.Fatalf("accepted %v key %q, want %q (%s)", o.Accepted(), o.Key, tc.key, o.Problem)
			}
			if len(o.Out) != 1 || o.Out[0].Subject != natsx.SubjectClassified || o.Out[0].MsgID != tc.key+":classified" {
				t.Fatalf("published %+v", o.Out)
			}
			var w envelope.Work
			if err := json.Unmarshal(o.Out[0].Data, &w); err != nil {
				t.Fatal(err)
			}
			if w.Key != tc.key || w.Request.Route != "chat" || w.Route != "" || len(w.Chain) != 0 || !w.Deadline.Equal(testNow.Add(30*time.Second)) {
				t.Errorf("work %+v", w)
			}
		})
	}
}

// TestTraceParent: a request without trace context gets a W3C traceparent
// that is not sampled (a sampled one makes the NATS server parse every
// header of every message it is on) and the same for every delivery of the
// stored message; a client's traceparent is kept as it came.
func TestTraceParent(t *testing.T) {
	in := newTestIntake(t)
	body := `{"id":"r1","tenant":"acme","route":"chat",` + msgs + `}`
	traceOf := func(hdr nats.Header) string {
		t.Helper()
		o := decide(t, in, body, hdr)
		if len(o.Out) != 1 {
			t.Fatalf("published %+v", o.Out)
		}
		return o.Out[0].Header.Get(natsx.HeaderTraceParent)
	}
	generated := traceOf(nil)
	if !regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-00$`).MatchString(generated) {
		t.Errorf("generated traceparent %q: want 00-<32 hex>-<16 hex>-00", generated)
	}
	if again := traceOf(nil); again != generated {
		t.Errorf("redelivery got traceparent %q, first %q", again, generated)
	}
	const client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if got := traceOf(nats.Header{natsx.HeaderTraceParent: {client}}); got != client {
		t.Errorf("client traceparent became %q", got)
	}
}

// TestDecideAccepts: valid envelopes at the edges of the new rules pass.
func TestDecideAccepts(t *testing.T) {
	in := newTestIntake(t)
	for _, body := range []string{
		`{"id":"r1","tenant":"acme","reply_to":"llm.replies.acme.mine",` + msgs + `}`,
		`{"id":"r1","tenant":"acme","reply_to":"_INBOX.acme.x1",` + msgs + `}`,
		`{"id":"r1","tenant":"acme","policy":{"max_cost_usd":0.5},` + msgs + `}`,
		`{"id":"r1","tenant":"acme","response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object"}}},` + msgs + "}\n",
	} {
		if o := decide(t, in, body, nil); !o.Accepted() {
			t.Errorf("%s: refused %s %s", body, o.Code, o.Problem)
		}
	}
}

// TestReplyToInbox: a refusal to a core inbox is published on core NATS.
func TestReplyToInbox(t *testing.T) {
	in := newTestIntake(t)
	o := decide(t, in, `{"id":"r1","tenant":"acme","reply_to":"_INBOX.acme.x1","colour":1,`+msgs+`}`, nil)
	reply, ok := bySubject(t, o.Out)["_INBOX.acme.x1"]
	if !ok || !reply.Core {
		t.Fatalf("reply %+v", reply)
	}
}
