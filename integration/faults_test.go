package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/faultnet"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// Two executor replicas of one vendor both take work; stopping one mid-run
// loses no request.
func TestExecutorReplicasShareQueueAndSurviveLoss(t *testing.T) {
	lat := &sim.Latency{BaseMS: 20, JitterMS: 10}
	e := start(t, func(c *app.Config) {
		c.ExecutorReplicas = 2
		c.Scenario = &sim.Scenario{Defaults: sim.Behavior{Latency: lat}}
	})
	var reqs []*envelope.Request
	for i := range 200 {
		reqs = append(reqs, e.request(fmt.Sprintf("k%03d", i), "chat", fmt.Sprintf("replica test %d", i)))
	}
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for i, r := range reqs {
		if err := e.client.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
		if i == 100 {
			// Both replicas must have taken work before one goes away.
			waitFor(t, 20*time.Second, func() bool {
				return e.sys.ExecutorHandled("openai", 0) > 0 && e.sys.ExecutorHandled("openai", 1) > 0
			})
			e.sys.StopExecutor("openai", 0)
		}
	}
	if err := col.Wait(ctx, 200); err != nil {
		t.Fatal(err)
	}
	for id, rs := range col.All() {
		if len(rs) != 1 || rs[0].Status != envelope.StatusOK {
			t.Fatalf("%s: %d replies, first %+v", id, len(rs), rs[0])
		}
	}
	a, b := e.sys.ExecutorHandled("openai", 0), e.sys.ExecutorHandled("openai", 1)
	t.Logf("replica 0 handled %d, replica 1 handled %d", a, b)
	if a == 0 || b == 0 {
		t.Fatalf("both replicas should take work: %d / %d", a, b)
	}
}

// ClickHouse unreachable for 60 s mid-run under load, then back: no missing
// and no duplicate rows. The outage is a real network cut between the ledger and
// the real server (a loopback proxy that drops every connection and refuses
// new ones), which is what a stopped server looks like to the ledger.
func TestClickHouseOutageLosesNothing(t *testing.T) {
	requireClickHouse(t)
	proxy, err := faultnet.Start(clickhouseAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Down)
	e := start(t, func(c *app.Config) { c.Ledger.ClickHouseAddr = proxy.Addr() })
	tenant := fmt.Sprintf("tenant = '%s'", e.tenant)

	batch := func(prefix string, n int) []*envelope.Request {
		var out []*envelope.Request
		for i := range n {
			out = append(out, e.request(fmt.Sprintf("%s%03d", prefix, i), "chat", fmt.Sprintf("%s %d", prefix, i)))
		}
		return out
	}
	e.submitAll(batch("a", 50), 60*time.Second)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL WHERE "+tenant, 50, 30*time.Second); got != 50 {
		t.Fatalf("before outage: %d rows, want 50", got)
	}
	proxy.Down()
	outageStart := time.Now()
	total := 50
	for i := 0; time.Since(outageStart) < 60*time.Second; i++ {
		// The pipeline keeps answering while the ledger cannot store.
		e.submitAll(batch(fmt.Sprintf("b%02d-", i), 25), 60*time.Second)
		total += 25
		time.Sleep(2 * time.Second)
	}
	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	if got := e.eventually("SELECT count() FROM %s.requests FINAL WHERE "+tenant, uint64(total), 90*time.Second); got != uint64(total) {
		t.Fatalf("after outage: %d request rows, want %d", got, total)
	}
	// FINAL hides duplicates; uniqExact against count proves there are none
	// visible, and the attempts table must match as well.
	if got := e.count("SELECT uniqExact(request_id) FROM %s.requests FINAL WHERE " + tenant); got != uint64(total) {
		t.Fatalf("distinct requests = %d, want %d", got, total)
	}
	if got := e.eventually("SELECT count() FROM %s.attempts FINAL WHERE "+tenant, uint64(total), 30*time.Second); got != uint64(total) {
		t.Fatalf("attempt rows = %d, want %d", got, total)
	}
	t.Logf("%d requests, %d of them during the 60 s outage: all stored once", total, total-50)
}

// waitFor is testkit.Eventually for the many waits here whose test names
// what they wait for.
func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, d, "the condition", cond)
}
