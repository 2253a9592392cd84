package limiter

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

func newJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := testkit.JetStream(t)
	return js
}

func TestAcquire(t *testing.T) {
	tests := []struct {
		name      string
		limits    Limits
		calls     int
		tokens    int
		allowed   int
		limitKind string
	}{
		{"rpm", Limits{RPM: 5}, 8, 10, 5, "rpm"},
		{"tpm", Limits{TPM: 1000}, 8, 300, 3, "tpm"},
		{"both, tokens bind first", Limits{RPM: 10, TPM: 500}, 8, 200, 2, "tpm"},
		{"unlimited", Limits{}, 20, 1000, 20, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			l, err := New(ctx, newJS(t), map[string]Limits{"v": tt.limits})
			if err != nil {
				t.Fatal(err)
			}
			allowed := 0
			var sat *Saturated
			for i := range tt.calls {
				err := l.Acquire(ctx, "v", tt.tokens, fmt.Sprintf("call-%d", i))
				switch {
				case err == nil:
					allowed++
				case errors.As(err, &sat):
					if sat.Limit != tt.limitKind || sat.RetryAfter <= 0 {
						t.Fatalf("saturated %+v", sat)
					}
				default:
					t.Fatal(err)
				}
			}
			if allowed != tt.allowed {
				t.Fatalf("allowed %d of %d, want %d", allowed, tt.calls, tt.allowed)
			}
		})
	}
}

// The same call acquiring twice (a redelivered attempt) takes one slot.
func TestAcquireIsIdempotentPerCall(t *testing.T) {
	ctx := context.Background()
	l, err := New(ctx, newJS(t), map[string]Limits{"v": {RPM: 2}})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := l.Acquire(ctx, "v", 0, "same"); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Acquire(ctx, "v", 0, "other"); err != nil {
		t.Fatalf("second distinct call refused: %v", err)
	}
	if err := l.Acquire(ctx, "v", 0, "third"); err == nil {
		t.Fatal("third distinct call allowed over rpm 2")
	}
}
