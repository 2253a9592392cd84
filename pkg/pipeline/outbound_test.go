package pipeline

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// headerMsg is the few jetstream.Msg methods the middleware uses.
type headerMsg struct {
	jetstream.Msg
	hdr nats.Header
}

func (m *headerMsg) Headers() nats.Header                      { return m.hdr }
func (m *headerMsg) Data() []byte                              { return []byte(`{}`) }
func (m *headerMsg) Subject() string                           { return "llm.results" }
func (m *headerMsg) Metadata() (*jetstream.MsgMetadata, error) { return nil, errors.New("none") }
func (m *headerMsg) TermWithReason(string) error               { return nil }
func (m *headerMsg) NakWithDelay(time.Duration) error          { return nil }

// The stage middleware's own lines (here: a dead letter) carry the request
// id, tenant and trace id of the work message they are about.
func TestRequestStageLogsRequestFields(t *testing.T) {
	w := &envelope.Work{Key: "k", Request: envelope.Request{ID: "req-1", Tenant: "acme"}, TraceParent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"}
	o, err := WorkOut("llm.results", "id", w)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	h := RequestStage(zerolog.New(&buf), func(context.Context, *Delivery) error {
		return Terminal("boom", errors.New("poison"))
	}, func(context.Context, *Delivery, string, error) error { return nil }, 5, time.Second)
	if err := h(context.Background(), &Delivery{Msg: &headerMsg{hdr: o.Header}}); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	for _, want := range []string{`"request_id":"req-1"`, `"tenant":"acme"`, `"trace_id":"0123456789abcdef0123456789abcdef"`, "dead-lettered"} {
		if !strings.Contains(line, want) {
			t.Fatalf("log line %q lacks %s", line, want)
		}
	}
}
