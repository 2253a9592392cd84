package pipeline_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A stage whose consumer (or its stream) disappears, or whose connection
// closes, must not idle as if healthy: Run returns an error saying why.
func TestRunReturnsWhenItsConsumerIsGone(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(ctx context.Context, t *testing.T, js jetstream.JetStream, closeConn func())
	}{
		{"consumer deleted", func(ctx context.Context, t *testing.T, js jetstream.JetStream, _ func()) {
			if err := js.DeleteConsumer(ctx, "S", "c"); err != nil {
				t.Fatal(err)
			}
		}},
		{"stream deleted", func(ctx context.Context, t *testing.T, js jetstream.JetStream, _ func()) {
			if err := js.DeleteStream(ctx, "S"); err != nil {
				t.Fatal(err)
			}
		}},
		{"connection closed", func(_ context.Context, _ *testing.T, _ jetstream.JetStream, closeConn func()) { closeConn() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := testkit.Server(t)
			nc, js := testkit.Connect(t, url)
			_, admin := testkit.Connect(t, url)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
				t.Fatal(err)
			}
			cons, err := js.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
			if err != nil {
				t.Fatal(err)
			}
			handled := make(chan struct{}, 1)
			h := func(context.Context, *pipeline.Delivery) error {
				select {
				case handled <- struct{}{}:
				default:
				}
				return nil
			}
			ran := make(chan error, 1)
			go func() { ran <- pipeline.Run(ctx, zerolog.Nop(), cons, h, pipeline.RunOptions{Concurrency: 2}) }()
			if _, err := js.Publish(ctx, "s.1", []byte("x")); err != nil {
				t.Fatal(err)
			}
			<-handled // consuming
			tt.breakIt(ctx, t, admin, nc.Close)
			select {
			case err := <-ran:
				if err == nil || errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Run returned %v, want the reason its consumer stopped", err)
				}
				t.Logf("Run: %v", err)
			case <-ctx.Done():
				t.Fatal("Run kept idling after its consumer was gone")
			}
		})
	}
}
