package pipeline_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// Every message a stage handles is counted by how it was settled, and its
// queue wait (stored → handler start) and handler time are observed, under
// the stage's label: what an operator reads on /metrics to see where time
// goes.
func TestRunRecordsStageMetrics(t *testing.T) {
	url := testkit.Server(t)
	_, js := testkit.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	// s.ok is acked, s.bad dead-lettered (termed), s.retry naked once then acked.
	const hold = 20 * time.Millisecond
	h := pipeline.Stage(zerolog.Nop(), func(ctx context.Context, d *pipeline.Delivery) error {
		time.Sleep(hold)
		switch d.Msg.Subject() {
		case "s.bad":
			return pipeline.Terminal("bad", errors.New("bad input"))
		case "s.retry":
			if d.NumDelivered() == 1 {
				return pipeline.Transient(errors.New("try again"), time.Millisecond)
			}
		}
		return nil
	}, func(context.Context, *pipeline.Delivery, string, error) error { return nil }, 5, 5*time.Second)
	reg := prometheus.NewRegistry()
	go func() {
		_ = pipeline.Run(ctx, zerolog.Nop(), cons, h, pipeline.RunOptions{Concurrency: 1, Stage: "test", Metrics: reg})
	}()
	for _, s := range []string{"s.ok", "s.bad", "s.retry"} {
		if _, err := js.Publish(ctx, s, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]float64{"ack": 2, "nak": 1, "term": 1}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := outcomes(t, reg, "test")
		if maps.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outcomes %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, name := range []string{"switchyard_stage_handle_seconds", "switchyard_stage_queue_wait_seconds"} {
		count, sum := histogram(t, reg, name, "test")
		if count != 4 {
			t.Errorf("%s: %d observations, want 4 (one per delivery)", name, count)
		}
		if name == "switchyard_stage_handle_seconds" && sum < 4*hold.Seconds() {
			t.Errorf("%s: sum %.3fs, want at least 4 × %v", name, sum, hold)
		}
	}
	// The messages published together waited behind each other's handling.
	if _, sum := histogram(t, reg, "switchyard_stage_queue_wait_seconds", "test"); sum < hold.Seconds() {
		t.Errorf("queue wait sum %.3fs, want at least %v (messages queued behind a %v handler)", sum, hold, hold)
	}
}

// outcomes reads switchyard_stage_messages_total per outcome for stage.
func outcomes(t *testing.T, reg *prometheus.Registry, stage string) map[string]float64 {
	t.Helper()
	got := map[string]float64{}
	for _, m := range family(t, reg, "switchyard_stage_messages_total") {
		if label(m, "stage") == stage {
			got[label(m, "outcome")] = m.GetCounter().GetValue()
		}
	}
	return got
}

// histogram reads a stage's observation count and sum.
func histogram(t *testing.T, reg *prometheus.Registry, name, stage string) (uint64, float64) {
	t.Helper()
	for _, m := range family(t, reg, name) {
		if label(m, "stage") == stage {
			return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
		}
	}
	return 0, 0
}

func family(t *testing.T, reg *prometheus.Registry, name string) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
