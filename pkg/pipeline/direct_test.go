package pipeline

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A writer's hand-off reaches the reader's door when the door handles the
// message; otherwise it goes to the stream, marked as possibly handled
// when the door was asked (or the writer's run is a rerun), and unmarked
// when the door was not. No answer pauses the direct way: the next message
// is not offered.
func TestDirectHandOffThroughTheDoor(t *testing.T) {
	nop := func() *zerolog.Logger { l := zerolog.Nop(); return &l }
	for _, tt := range []struct {
		name        string
		door        func(context.Context, []byte) error // nil: no door
		disabled    bool
		rerun       bool
		wantHandled bool
		wantAsked   int32
		wantMarked  bool
		wantPaused  bool
		wantAnswer  string // the door's outcome counted
	}{
		{name: "handled", door: func(context.Context, []byte) error { return nil }, wantHandled: true, wantAsked: 1, wantAnswer: "handled"},
		{name: "refused", door: func(context.Context, []byte) error { return errors.New("no") }, wantAsked: 1, wantMarked: true, wantAnswer: "refused"},
		{name: "a panic is a refusal", door: func(context.Context, []byte) error { panic("boom") }, wantAsked: 1, wantMarked: true, wantAnswer: "refused"},
		{name: "no door", wantMarked: true, wantPaused: true},
		{name: "turned off", door: func(context.Context, []byte) error { return nil }, disabled: true},
		{name: "a rerun goes to the stream, marked", door: func(context.Context, []byte) error { return nil }, rerun: true, wantMarked: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := testkit.Server(t)
			wnc, _ := testkit.Connect(t, url)
			var asked atomic.Int32
			reg := prometheus.NewRegistry()
			if tt.door != nil {
				rnc, _ := testkit.Connect(t, url)
				stop, err := DirectDoor{NC: rnc, Subject: "test.door", Queue: "q", Stage: "s", Concurrency: 2, Timeout: time.Second, Log: zerolog.Nop(), Metrics: reg,
					Handle: func(ctx context.Context, data []byte) error {
						asked.Add(1)
						if string(data) != "work" {
							t.Errorf("the door got %q", data)
						}
						return tt.door(ctx, data)
					}}.Serve(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				defer stop()
				if err := rnc.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			h := &DirectHandOff{NC: wnc, Subject: "test.door", Enabled: !tt.disabled, Timeout: time.Second,
				Paths: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p"}, []string{"path"})}
			hdr := nats.Header{"Traceparent": []string{"x"}}
			handled, streamHdr := h.Offer(context.Background(), []byte("work"), hdr, tt.rerun, nop)
			if handled != tt.wantHandled || asked.Load() != tt.wantAsked {
				t.Fatalf("handled %v after %d asks, want %v after %d", handled, asked.Load(), tt.wantHandled, tt.wantAsked)
			}
			if !handled {
				if marked := streamHdr.Get(natsx.HeaderTriedDirect) != ""; marked != tt.wantMarked || streamHdr.Get("Traceparent") != "x" {
					t.Fatalf("stream header %v: marked %v, want %v (and the writer's headers kept)", streamHdr, marked, tt.wantMarked)
				}
			}
			if hdr.Get(natsx.HeaderTriedDirect) != "" {
				t.Fatal("the writer's own header map was changed")
			}
			wantPath := map[bool]string{true: "direct", false: "stream"}[tt.wantHandled]
			if testutil.ToFloat64(h.Paths.WithLabelValues(wantPath)) != 1 {
				t.Fatalf("path %s not counted", wantPath)
			}
			if tt.wantAnswer != "" && gathered(t, reg, "switchyard_stage_direct_total", "outcome", tt.wantAnswer) != 1 {
				t.Fatalf("the door's %s answer not counted", tt.wantAnswer)
			}
			if tt.door != nil && tt.wantAsked > 0 && gathered(t, reg, "switchyard_stage_direct_seconds", "stage", "s") != 1 {
				t.Fatal("the door's handling time not observed")
			}
			if h.Paused() != tt.wantPaused {
				t.Fatalf("paused %v, want %v", h.Paused(), tt.wantPaused)
			}
			if tt.wantPaused {
				// Paused: not even asked, so not marked.
				if handled, streamHdr := h.Offer(context.Background(), []byte("work"), hdr, false, nop); handled || streamHdr.Get(natsx.HeaderTriedDirect) != "" {
					t.Fatalf("while paused: handled %v, header %v", handled, streamHdr)
				}
			}
		})
	}
}

// A stopped door answers nothing more, and what it had received is
// answered first.
func TestDirectDoorStopDrains(t *testing.T) {
	url := testkit.Server(t)
	rnc, _ := testkit.Connect(t, url)
	wnc, _ := testkit.Connect(t, url)
	entered, release := make(chan struct{}), make(chan struct{})
	stop, err := DirectDoor{NC: rnc, Subject: "test.door", Queue: "q", Stage: "s", Concurrency: 1, Timeout: 5 * time.Second, Log: zerolog.Nop(),
		Handle: func(context.Context, []byte) error { close(entered); <-release; return nil }}.Serve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := rnc.Flush(); err != nil {
		t.Fatal(err)
	}
	answered := make(chan error, 1)
	go func() {
		resp, err := wnc.Request("test.door", []byte("work"), 5*time.Second)
		if err == nil && resp.Header.Get(natsx.HeaderDirectError) != "" {
			err = errors.New(resp.Header.Get(natsx.HeaderDirectError))
		}
		answered <- err
	}()
	<-entered
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	close(release)
	if err := <-answered; err != nil {
		t.Fatalf("the hand-off in progress at stop: %v", err)
	}
	<-stopped
	if _, err := wnc.Request("test.door", []byte("work"), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("after stop: %v, want no responders", err)
	}
}

// A message published after its direct hand-off went unconfirmed is a
// rerun: its handler checks what an earlier run published.
func TestTriedDirectIsARerun(t *testing.T) {
	for _, tt := range []struct {
		name string
		hdr  nats.Header
		want bool
	}{
		{"first delivery", nats.Header{}, false},
		{"tried directly", MarkTriedDirect(nats.Header{}), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := &Delivery{Msg: &headerMsg{hdr: tt.hdr}}
			if got := d.Rerun(); got != tt.want {
				t.Fatalf("Rerun() = %v, want %v", got, tt.want)
			}
		})
	}
}

// gathered is the value (a counter's, or a histogram's sample count) of
// the series of name in reg whose label is value.
func gathered(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					if h := m.GetHistogram(); h != nil {
						return float64(h.GetSampleCount())
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
