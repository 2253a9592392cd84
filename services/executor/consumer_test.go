package executor

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// ConsumerConfigFor is what a running executor uses (ConsumerConfig), from
// the configuration and the policy's vendor alone: `switchyard provision`
// computes it without the vendor's key.
func TestConsumerConfigForNeedsNoAdapter(t *testing.T) {
	cfg := Config{Vendor: "acme", MaxDeliver: 4, AckWait: 7 * time.Second, DefaultMaxConcurrency: 64}
	for _, tc := range []struct {
		name    string
		vendor  policy.Vendor
		pending int
	}{
		{"vendor's max_concurrency", policy.Vendor{MaxConcurrency: 9}, 9},
		{"default when the policy sets none", policy.Vendor{}, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ConsumerConfigFor(cfg, tc.vendor)
			want := jetstream.ConsumerConfig{Durable: "exec-acme", Description: "executors of vendor acme", FilterSubject: natsx.ExecSubject("acme"),
				AckPolicy: jetstream.AckExplicitPolicy, AckWait: 7 * time.Second, MaxDeliver: 4, MaxAckPending: tc.pending}
			if got.Durable != want.Durable || got.FilterSubject != want.FilterSubject || got.AckPolicy != want.AckPolicy ||
				got.AckWait != want.AckWait || got.MaxDeliver != want.MaxDeliver || got.MaxAckPending != want.MaxAckPending || got.Description != want.Description {
				t.Errorf("got %+v, want %+v", got, want)
			}
			e := &Executor{cfg: cfg, vendor: tc.vendor}
			if m := e.ConsumerConfig(); m.MaxAckPending != got.MaxAckPending || m.Durable != got.Durable || m.AckWait != got.AckWait {
				t.Errorf("a running executor's consumer %+v differs from ConsumerConfigFor's %+v", m, got)
			}
		})
	}
}
