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

// A vendor down for 60 s, then healthy: the shared breakers open after the
// configured failures, the fallback serves meanwhile without calls to the
// dead vendor, half-open probes are bounded, the breakers close and traffic
// returns to the primary within 30 s of recovery; every transition is
// alerted on llm.alerts.circuit.
func TestBreakerOpensAndRecovers(t *testing.T) {
	const outage, openFor, every = 60 * time.Second, 5 * time.Second, 200 * time.Millisecond
	e := start(t, func(c *app.Config) {
		c.Breaker.FailureThreshold = 3
		c.Breaker.OpenFor = openFor
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
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	began := time.Now()
	n := 0
	recoveredBy := -1 // the first request sent 30 s after recovery
	for time.Since(began) < outage+40*time.Second {
		if recoveredBy < 0 && time.Since(began) > outage+30*time.Second {
			recoveredBy = n
		}
		if err := e.client.Publish(ctx, e.request(fmt.Sprintf("b%04d", n), "chat", fmt.Sprintf("breaker %d", n))); err != nil {
			t.Fatal(err)
		}
		n++
		time.Sleep(every)
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
	during := int64(outage / every)
	t.Logf("%d requests, %d while openai was down; openai saw %d failing calls", n, during, failed)
	// The opening failures, then at most one probe per cool-down.
	if bound := 3 + int64(outage/openFor) + 3; failed > bound {
		t.Fatalf("openai got %d failing calls during the outage (bound %d); the breaker should have stopped them", failed, bound)
	}
	// Within 30 s of recovery, traffic is back on the primary.
	for i := recoveredBy; i < n; i++ {
		if r := replies[fmt.Sprintf("b%04d", i)][0]; r.Vendor != "openai" || r.Fallback {
			t.Fatalf("b%04d, sent 30 s after recovery, served by %s fallback=%v", i, r.Vendor, r.Fallback)
		}
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
