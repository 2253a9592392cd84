package pipeline

import (
	"context"
	"errors"
	"fmt"
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

// A stage whose hand-off finds JetStream without a stream leader (a
// cluster electing one after losing a node: 4 to 9 s) retries for longer
// than a flaky call, so its five deliveries outlast the election instead
// of dead-lettering the message within a second and a half. (Before: the
// same 50 ms … 800 ms backoff as any error.)
func TestUnavailableJetStreamIsRetriedPastAnElection(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		minTotal time.Duration // the least the four naks add up to
		maxTotal time.Duration
	}{
		{"no stream leader", fmt.Errorf("publish llm.results: %w", jetstream.ErrNoStreamResponse), 12 * time.Second, 30 * time.Second},
		{"no responders", Transient(fmt.Errorf("dedupe claim: %w", nats.ErrNoResponders), 0), 12 * time.Second, 30 * time.Second},
		{"cluster unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, 12 * time.Second, 30 * time.Second},
		{"a flaky call keeps the short backoff", errors.New("flaky"), 0, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var total time.Duration
			for n := uint64(1); n < 5; n++ {
				msg := &fakeMsg{delivered: n}
				d := &Delivery{Msg: msg, Meta: &jetstream.MsgMetadata{NumDelivered: n}}
				// The naks after the in-place retries (TestUnavailableJetStreamIsRetriedInPlace).
				h := stage(plainLog(zerolog.Nop()), func(context.Context, *Delivery) error { return tt.err }, nil, 5, time.Second, false)
				if err := h(context.Background(), d); err != nil || msg.settled != "nak" {
					t.Fatalf("delivery %d: err %v, settled %q; want a nak", n, err, msg.settled)
				}
				total += msg.delay
			}
			if total < tt.minTotal || total > tt.maxTotal {
				t.Fatalf("naks add up to %s, want between %s and %s", total, tt.minTotal, tt.maxTotal)
			}
		})
	}
}

// A dead letter that cannot be written because JetStream is electing a
// leader is retried in place: at the last delivery a nak would leave the
// message undelivered for good (the server stops at MaxDeliver).
func TestDeadLetterRetriedInPlaceWhileJetStreamIsUnavailable(t *testing.T) {
	msg := &fakeMsg{delivered: 5}
	d := &Delivery{Msg: msg, Meta: &jetstream.MsgMetadata{NumDelivered: 5}}
	calls := 0
	dl := func(context.Context, *Delivery, string, error) error {
		if calls++; calls < 3 {
			return fmt.Errorf("publish llm.dlq.intake: %w", jetstream.ErrNoStreamResponse)
		}
		return nil
	}
	h := Stage(zerolog.Nop(), func(context.Context, *Delivery) error { return errors.New("flaky") }, dl, 5, time.Second)
	if err := h(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if msg.settled != "term" || calls != 3 {
		t.Fatalf("settled %q after %d dead-letter calls; want term after 3", msg.settled, calls)
	}
}

// A handler that finds JetStream unavailable is run again in place,
// keeping its message, and goes on as soon as JetStream answers; the
// message's deliveries are not used up. Before, every such error was a
// nak of 1 to 10 s, and a partition of 10 s dead-lettered a request whose
// five deliveries ran out (docs/operations.md). Other errors are naked at
// once, and a stopping stage hands the message back.
func TestUnavailableJetStreamIsRetriedInPlace(t *testing.T) {
	unavailable := fmt.Errorf("publish llm.verdicts: %w", jetstream.ErrNoStreamResponse)
	waits := []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}
	tests := []struct {
		name        string
		errs        []error // what each run returns; nil after the last
		stopping    bool
		inPlace     bool
		wantRuns    int
		wantSettled string
	}{
		{"answers again after two runs", []error{unavailable, unavailable}, false, true, 3, ""},
		{"unavailable throughout: handed back after the schedule", []error{unavailable, unavailable, unavailable, unavailable, unavailable}, false, true, 4, "nak"},
		{"a flaky call is naked at once", []error{errors.New("flaky")}, false, true, 1, "nak"},
		{"terminal is dead-lettered at once", []error{Terminal("bad", unavailable)}, false, true, 1, "term"},
		{"a stopping stage hands it back", []error{unavailable}, true, true, 1, "nak"},
		{"off (the executor): naked at once", []error{unavailable}, false, false, 1, "nak"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := &fakeMsg{delivered: 1}
			stopping := make(chan struct{})
			if tt.stopping {
				close(stopping)
			}
			d := &Delivery{Msg: msg, Meta: &jetstream.MsgMetadata{NumDelivered: 1}, stopping: stopping}
			var runs int
			var reruns []bool
			h := func(context.Context, *Delivery) error {
				reruns = append(reruns, d.Rerun())
				runs++
				if runs <= len(tt.errs) {
					return tt.errs[runs-1]
				}
				return nil
			}
			var sched []time.Duration
			if tt.inPlace {
				sched = waits
			}
			stack := Chain(h, deadLetterWith(plainLog(zerolog.Nop()), func(context.Context, *Delivery, string, error) error { return nil }),
				retryWith(plainLog(zerolog.Nop()), 5, Backoff{Base: 100 * time.Millisecond, Max: 10 * time.Second}, sched))
			if err := stack(context.Background(), d); err != nil {
				t.Fatal(err)
			}
			if runs != tt.wantRuns || msg.settled != tt.wantSettled {
				t.Fatalf("%d runs, settled %q; want %d runs, %q", runs, msg.settled, tt.wantRuns, tt.wantSettled)
			}
			for i, r := range reruns {
				if r != (i > 0) {
					t.Fatalf("run %d: Rerun() = %v", i+1, r)
				}
			}
		})
	}
}
