package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// A vendor down for 4 s, then healthy: the shared breaker opens after the
// configured failures, the fallback serves meanwhile without calls to the
// dead vendor, half-open probes are bounded, the breaker closes and traffic
// returns to the primary; every transition is alerted on llm.alerts.circuit.
func TestBreakerOpensAndRecovers(t *testing.T) {
	const outage = 4 * time.Second
	e := start(t, func(c *app.Config) {
		c.Breaker.FailureThreshold = 3
		c.Breaker.OpenFor = 500 * time.Millisecond
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: sim.Behavior{
			Outages: []sim.Outage{{StartAfterMS: 0, DurationMS: outage.Milliseconds(), Status: 503}},
		}}}}
	})
	var mu sync.Mutex
	var alerts []map[string]any
	sub, err := e.sys.NC.Subscribe("llm.alerts.circuit", func(m *nats.Msg) {
		var a map[string]any
		if json.Unmarshal(m.Data, &a) == nil {
			mu.Lock()
			alerts = append(alerts, a)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	began := time.Now()
	n := 0
	for time.Since(began) < outage+3*time.Second {
		if err := e.client.Publish(ctx, e.request(fmt.Sprintf("b%04d", n), "chat", fmt.Sprintf("breaker %d", n))); err != nil {
			t.Fatal(err)
		}
		n++
		time.Sleep(40 * time.Millisecond)
	}
	if err := col.Wait(ctx, n); err != nil {
		t.Fatal(err)
	}
	replies := col.All()
	for i := range n {
		r := replies[fmt.Sprintf("b%04d", i)][0]
		if r.Status != envelope.StatusOK {
			t.Fatalf("b%04d: %+v", i, r.Error)
		}
	}
	// Calls to the dead vendor are bounded: the opening failures plus a few
	// half-open probes, not one per request.
	failed := e.sys.Sim.Calls().Model("openai", "gpt-4o-mini").ByStatus[503]
	during := int64(outage / (40 * time.Millisecond))
	t.Logf("%d requests, %d while openai was down; openai saw %d failing calls", n, during, failed)
	if failed > 3+int64(outage/(500*time.Millisecond))+2 {
		t.Fatalf("openai got %d failing calls during the outage; the breaker should have stopped them", failed)
	}
	// Traffic is back on the primary by the end.
	last := replies[fmt.Sprintf("b%04d", n-1)][0]
	if last.Vendor != "openai" || last.Fallback {
		t.Fatalf("last request served by %s fallback=%v; want the recovered primary", last.Vendor, last.Fallback)
	}
	waitFor(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		seen := map[string]bool{}
		for _, a := range alerts {
			seen[fmt.Sprint(a["to"])] = true
		}
		return seen["open"] && seen["half_open"] && seen["closed"]
	})
}
