package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// fakeMsg records how a message was settled. A fake is fine here: this
// tests the middleware's decisions, not JetStream.
type fakeMsg struct {
	jetstream.Msg
	settled   string
	delay     time.Duration
	delivered uint64
}

func (m *fakeMsg) Ack() error                                { m.settled = "ack"; return nil }
func (m *fakeMsg) NakWithDelay(d time.Duration) error        { m.settled, m.delay = "nak", d; return nil }
func (m *fakeMsg) TermWithReason(string) error               { m.settled = "term"; return nil }
func (m *fakeMsg) InProgress() error                         { return nil }
func (m *fakeMsg) Subject() string                           { return "llm.test" }
func (m *fakeMsg) Data() []byte                              { return []byte("{}") }
func (m *fakeMsg) Headers() nats.Header                      { return nats.Header{} }
func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) { return nil, nil }

func TestStageSettlesEveryMessageOnce(t *testing.T) {
	tests := []struct {
		name        string
		delivered   uint64
		err         error
		panics      bool
		dlFails     bool
		wantSettled string
		wantDL      string
	}{
		{"success is acked by the runner", 1, nil, false, false, "", ""},
		{"transient is naked with backoff", 1, errors.New("flaky"), false, false, "nak", ""},
		{"transient retry-after is honoured", 1, Transient(errors.New("busy"), 3*time.Second), false, false, "nak", ""},
		{"transient at max deliveries is dead-lettered", 5, errors.New("flaky"), false, false, "term", "max_deliveries"},
		{"terminal is dead-lettered at once", 1, Terminal("malformed_work", errors.New("bad")), false, false, "term", "malformed_work"},
		{"panic is dead-lettered", 1, nil, true, false, "term", "panic"},
		{"failed dead letter hands the message back", 1, Terminal("x", errors.New("bad")), false, true, "nak", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := &fakeMsg{delivered: tt.delivered}
			d := &Delivery{Msg: msg, Meta: &jetstream.MsgMetadata{NumDelivered: tt.delivered}}
			var dlReason string
			dl := func(_ context.Context, _ *Delivery, reason string, _ error) error {
				dlReason = reason
				if tt.dlFails {
					return errors.New("dlq down")
				}
				return nil
			}
			h := Stage(zerolog.Nop(), func(context.Context, *Delivery) error {
				if tt.panics {
					panic("boom")
				}
				return tt.err
			}, dl, 5, time.Second)
			if err := h(context.Background(), d); err != nil {
				t.Fatalf("stage returned %v; the stack must settle or return nil", err)
			}
			if msg.settled != tt.wantSettled || dlReason != tt.wantDL {
				t.Fatalf("settled=%q dead-letter=%q; want %q %q", msg.settled, dlReason, tt.wantSettled, tt.wantDL)
			}
			if tt.name == "transient retry-after is honoured" && msg.delay != 3*time.Second {
				t.Fatalf("delay %s, want 3s", msg.delay)
			}
		})
	}
}

func TestBackoffIsCappedAndGrows(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: 10 * time.Second}
	for n := uint64(1); n < 40; n++ {
		d := b.Delay(n)
		ceiling := min(b.Base<<min(n-1, 20), b.Max)
		if d < ceiling/2 || d > ceiling {
			t.Fatalf("delivery %d: delay %s outside [%s, %s]", n, d, ceiling/2, ceiling)
		}
	}
}
