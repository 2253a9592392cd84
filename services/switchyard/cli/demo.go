package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/services/ledger/report"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// runDemo is the main job: the whole pipeline on embedded NATS with the
// simulator, a sample workload over three routes with an OpenAI outage in
// the middle, then the replies and the reports read back from ClickHouse.
func runDemo(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlags("demo", errOut)
	n := fs.Int("requests", 90, "requests per phase (three phases: before, during and after the outage)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *n < 3 {
		return usageErr("-requests must be at least 3")
	}
	cfg, err := loadAppConfig()
	if err != nil {
		return err
	}
	dataDir, err := os.MkdirTemp("", "switchyard-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	cfg.DataDir, cfg.NATSPort, cfg.NATSURL = dataDir, -1, ""
	cfg.Sim, cfg.SimAddr, cfg.HTTPAddr, cfg.Edge.Addr = app.SimOn, "127.0.0.1:0", "", "127.0.0.1:0"
	// Gemini drafts for the extract route come back as broken JSON one time
	// in five: the gate escalates exactly those to the next model.
	cfg.Scenario = &sim.Scenario{
		Defaults: sim.Behavior{Latency: &sim.Latency{BaseMS: 30, JitterMS: 40}},
		Vendors:  map[string]sim.VendorScenario{"gemini": {Behavior: sim.Behavior{InvalidJSONRate: sim.Ptr(0.2)}}},
	}
	// A short cool-down lets the demo show the breaker closing again.
	cfg.Breaker.OpenFor = time.Second
	log := logger(errOut, "", "error") // each stage adds its service key
	sys, err := app.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer sys.Stop()
	started := time.Now().Add(-time.Second)
	tenant := fmt.Sprintf("demo%d", time.Now().Unix())
	fmt.Fprintf(out, "switchyard demo: NATS %s, simulator %s, HTTP edge %s, tenant %s\n\n", sys.NATSURL, sys.SimURL, sys.EdgeAddr, tenant)
	viaEdge, err := startDemoEdge(ctx, sys, tenant)
	if err != nil {
		return err
	}

	c, err := client.New(sys.NC)
	if err != nil {
		return err
	}
	col, err := c.Collect(tenant)
	if err != nil {
		return err
	}
	defer col.Close()

	phases := []struct {
		name   string
		before func() error
	}{
		{"healthy vendors", nil},
		{"openai returns 503 (outage)", func() error {
			_, err := sys.Sim.PatchScenario([]byte(`{"vendors":{"openai":{"status":503}}}`))
			return err
		}},
		{"openai recovered", func() error {
			_, err := sys.Sim.PatchScenario([]byte(`{"vendors":{"openai":{"status":null}}}`))
			time.Sleep(1500 * time.Millisecond) // past the breaker's cool-down: a probe closes it
			return err
		}},
	}
	total := 0
	for pi, ph := range phases {
		if ph.before != nil {
			if err := ph.before(); err != nil {
				return fmt.Errorf("simulator scenario: %w", err)
			}
		}
		for i := range *n {
			// One request in four goes through the HTTP edge.
			send := c.Publish
			if i%4 == 1 {
				send = viaEdge.send
			}
			if err := send(ctx, demoRequest(tenant, pi, i)); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond) // a steady stream, not one burst
		}
		total += *n
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := col.Wait(wctx, total)
		cancel()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "phase %d (%s): %d requests answered\n", pi+1, ph.name, *n)
	}
	replies := col.All()
	printDemoReplies(out, replies)
	viaEdge.report(out)

	fmt.Fprintln(out, "\nwaiting for the ledger to store every request in ClickHouse ...")
	if err := waitLedger(ctx, sys, cfg, tenant, total); err != nil {
		return err
	}
	conn, err := openLedger(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	q := report.Query{Since: started, Until: time.Now().Add(time.Minute), By: []string{"vendor", "model"}}
	for _, r := range []struct{ title, kind string }{{"cost by vendor and model", "cost"}, {"fallbacks by vendor and model", "fallbacks"}, {"latency by vendor and model", "latency"}} {
		t, err := runReportKind(ctx, r.kind, conn, cfg.Ledger.ClickHouseDatabase, q)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "\n== switchyard report %s --by vendor,model (%s)\n", r.kind, r.title)
		if err := t.Write(out, "table"); err != nil {
			return err
		}
	}
	q.By = []string{"route"}
	t, err := runReportKind(ctx, "fallbacks", conn, cfg.Ledger.ClickHouseDatabase, q)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "\n== switchyard report fallbacks --by route")
	if err := t.Write(out, "table"); err != nil {
		return err
	}
	// demo.<route>: sent on NATS; edge.<route>: through the HTTP edge.
	q.By = []string{"endpoint_tag"}
	if t, err = runReportKind(ctx, "cost", conn, cfg.Ledger.ClickHouseDatabase, q); err != nil {
		return err
	}
	fmt.Fprintln(out, "\n== switchyard report cost --by endpoint_tag (edge.*: sent through the HTTP edge)")
	return t.Write(out, "table")
}

var demoPrompts = []struct{ route, prompt string }{
	{"chat", "What is a good name for a support bot? (%d)"},
	{"summarize", "Summarize this ticket: the customer says invoice %d total is wrong and wants a refund."},
	{"extract", "Extract the customer name and invoice total from ticket %d as JSON."},
}

func demoRequest(tenant string, phase, i int) *envelope.Request {
	p := demoPrompts[i%len(demoPrompts)]
	r := &envelope.Request{
		ID:            fmt.Sprintf("%s-p%d-%04d", tenant, phase+1, i),
		Tenant:        tenant,
		User:          fmt.Sprintf("user-%d", i%7),
		EndpointTag:   "demo." + p.route,
		PromptVersion: p.route + "_v1",
		Environment:   "demo",
		Route:         p.route,
		MaxTokens:     200,
		Messages:      []envelope.Message{{Role: "user", Content: fmt.Sprintf(p.prompt, i)}},
	}
	if p.route == "extract" {
		r.ResponseFormat = &envelope.ResponseFormat{Type: "json_schema", JSONSchema: &envelope.JSONSchemaSpec{
			Name:   "ticket",
			Schema: json.RawMessage(`{"type":"object","required":["customer","total"],"properties":{"customer":{"type":"string"},"total":{"type":"number"}}}`),
		}}
	}
	return r
}

func printDemoReplies(out io.Writer, replies map[string][]*envelope.Reply) {
	ids := make([]string, 0, len(replies))
	for id := range replies {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	ok, failed, fallback := 0, 0, 0
	for _, id := range ids {
		r := replies[id][0]
		if r.Status == envelope.StatusOK {
			ok++
		} else {
			failed++
		}
		if r.Fallback {
			fallback++
		}
	}
	fmt.Fprintf(out, "\n%d replies: %d ok, %d error, %d served by a fallback\n", len(ids), ok, failed, fallback)
	fmt.Fprintln(out, "\nsample replies:")
	shown := map[string]bool{}
	for _, id := range ids {
		r := replies[id][0]
		key := fmt.Sprintf("%s/%v/%s", r.Route, r.Fallback, r.Status)
		if shown[key] {
			continue
		}
		shown[key] = true
		path := ""
		for i, a := range r.Attempts {
			if i > 0 {
				path += " -> "
			}
			path += a.Vendor + "/" + a.Model + ":" + a.Outcome
			if a.HTTPStatus >= 400 {
				path += fmt.Sprintf("(%d)", a.HTTPStatus)
			}
		}
		content := r.Content
		if len(content) > 60 {
			content = content[:60] + "…"
		}
		fmt.Fprintf(out, "  %s route=%s status=%s fallback=%v cost=$%.6f latency=%dms attempts=[%s] %q\n",
			r.ID, r.Route, r.Status, r.Fallback, r.CostUSD, r.LatencyMS, path, content)
	}
}
