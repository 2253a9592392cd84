package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/adapters"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// runBench drives the in-process pipeline against a zero-latency simulator
// and the bare simulator with the same load, in one run, and prints
// throughput and latency percentiles. The ledger is off: this measures the
// request path; its ingestion has a benchmark of its own.
func runBench(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlags("bench", errOut)
	dur := fs.Duration("duration", 10*time.Second, "length of each measured phase")
	rates := fs.String("rates", "500,2000", "offered loads in requests/s")
	inflight := fs.Int("inflight", 512, "requests in flight in the saturation phase")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	compare := fs.Bool("compare-features", true, "repeat the saturation phase with breakers, limits and budgets off")
	withBudgets := fs.Bool("budgets", true, "give the bench tenant a (non-binding) budget, so every request reserves and settles")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var rateList []int
	for _, f := range splitComma(*rates) {
		var r int
		if _, err := fmt.Sscan(f, &r); err != nil || r <= 0 {
			return usageErr("-rates: %q is not a positive number", f)
		}
		rateList = append(rateList, r)
	}
	sys, c, stop, err := benchSystem(ctx, errOut, true, *withBudgets)
	if err != nil {
		return err
	}
	defer stop()
	direct, err := adapters.New("openai", adapters.Config{BaseURL: sim.BaseURL(sys.SimURL, "openai"), APIKey: "bench"})
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "switchyard bench: %s per phase, zero-latency simulator, embedded NATS (file store), GOMAXPROCS=%d\n\n", *dur, runtimeProcs())
	fmt.Fprintf(out, "%-28s %10s %10s %10s %10s %12s %12s\n", "phase", "offered/s", "done/s", "p50 ms", "p99 ms", "added p50", "added p99")
	seq := 0
	for _, rate := range rateList {
		res, err := benchPipeline(ctx, c, &seq, rate, 0, *dur)
		if err != nil {
			return err
		}
		res.print(out, fmt.Sprintf("pipeline @%d/s", rate), rate)
		dres := benchDirect(ctx, direct, rate, 0, *dur)
		dres.print(out, fmt.Sprintf("simulator direct @%d/s", rate), rate)
	}
	res, err := benchPipeline(ctx, c, &seq, 0, *inflight, *dur)
	if err != nil {
		return err
	}
	res.print(out, fmt.Sprintf("pipeline saturated (%d in flight)", *inflight), 0)
	if !*compare {
		return nil
	}
	// The same saturation phase on a fresh system without breakers, vendor
	// limits and budgets, to price what they cost.
	stop()
	_, c2, stop2, err := benchSystem(ctx, errOut, false, false)
	if err != nil {
		return err
	}
	defer stop2()
	off, err := benchPipeline(ctx, c2, &seq, 0, *inflight, *dur)
	if err != nil {
		return err
	}
	off.print(out, "saturated, features off", 0)
	on := float64(res.done) / res.elapsed.Seconds()
	base := float64(off.done) / off.elapsed.Seconds()
	what := "breakers + vendor limits"
	if *withBudgets {
		what += " + budgets"
	}
	fmt.Fprintf(out, "\n%s on: %.0f req/s vs %.0f off (%.1f%% of off)\n", what, on, base, 100*on/base)
	return nil
}

// benchTenant has a (non-binding) budget when features are on, so every
// request reserves and settles.
const benchTenant = "bench"

// benchSystem starts the in-process pipeline against a zero-latency
// simulator. With features, breakers are on and every vendor has rpm/tpm
// limits and the bench tenant a budget, none of them binding, so the
// benchmark pays for the checks without being throttled by them.
func benchSystem(ctx context.Context, errOut io.Writer, features, budgets bool) (*app.System, *client.Client, func(), error) {
	cfg, err := loadAppConfig()
	if err != nil {
		return nil, nil, nil, err
	}
	pol, err := policy.Load(cfg.PolicyFile)
	if err != nil {
		return nil, nil, nil, err
	}
	if features {
		for name, v := range pol.Vendors {
			v.RPM, v.TPM = 10_000_000, 1_000_000_000
			pol.Vendors[name] = v
		}
		if budgets {
			pol.Tenants = map[string]policy.Tenant{benchTenant: {Budget: policy.Budget{USDPerDay: 1e9}}}
		}
		if err := pol.Validate(); err != nil {
			return nil, nil, nil, err
		}
	}
	dataDir, err := os.MkdirTemp("", "switchyard-bench-")
	if err != nil {
		return nil, nil, nil, err
	}
	cfg.Policy = pol
	cfg.DataDir, cfg.NATSPort, cfg.NATSURL = dataDir, -1, ""
	cfg.Sim, cfg.SimAddr, cfg.HTTPAddr, cfg.Edge.Addr = app.SimOn, "127.0.0.1:0", "", ""
	cfg.LedgerEnabled, cfg.CacheEnabled, cfg.BreakersEnabled = false, false, features
	cfg.Scenario = &sim.Scenario{}
	sys, err := app.Start(ctx, cfg, logger(errOut, "", "error")) // each stage adds its service key
	if err != nil {
		os.RemoveAll(dataDir)
		return nil, nil, nil, err
	}
	// The bench's own connection, with up's credentials and TLS.
	opts, err := sys.ClientAuth.Options()
	if err != nil {
		sys.Stop()
		os.RemoveAll(dataDir)
		return nil, nil, nil, err
	}
	nc, err := nats.Connect(sys.NATSURL, opts...)
	if err != nil {
		sys.Stop()
		os.RemoveAll(dataDir)
		return nil, nil, nil, err
	}
	c, err := client.New(nc)
	if err != nil {
		nc.Close()
		sys.Stop()
		os.RemoveAll(dataDir)
		return nil, nil, nil, err
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			nc.Close()
			sys.Stop()
			os.RemoveAll(dataDir)
		})
	}
	return sys, c, stop, nil
}

type benchResult struct {
	done    int
	errors  int
	elapsed time.Duration
	e2e     []time.Duration
	added   []time.Duration
}

func (r *benchResult) print(out io.Writer, name string, offered int) {
	off := "-"
	if offered > 0 {
		off = fmt.Sprint(offered)
	}
	added50, added99 := "-", "-"
	if len(r.added) > 0 {
		added50, added99 = ms(pct(r.added, 50)), ms(pct(r.added, 99))
	}
	fmt.Fprintf(out, "%-28s %10s %10.0f %10s %10s %12s %12s", name, off, float64(r.done)/r.elapsed.Seconds(), ms(pct(r.e2e, 50)), ms(pct(r.e2e, 99)), added50, added99)
	if r.errors > 0 {
		fmt.Fprintf(out, "  (%d errors)", r.errors)
	}
	fmt.Fprintln(out)
}

// benchPipeline sends at rate/s (open loop) or keeps inflight requests in
// flight (closed loop) for d, and times each request from publish to reply.
func benchPipeline(ctx context.Context, c *client.Client, seq *int, rate, inflight int, d time.Duration) (*benchResult, error) {
	tenant := benchTenant
	var mu sync.Mutex
	sent := map[string]time.Time{}
	res := &benchResult{}
	slots := make(chan struct{}, max(inflight, 1))
	sub, err := c.NC.Subscribe("llm.replies."+tenant+".>", func(m *nats.Msg) {
		now := time.Now()
		var r envelope.Reply
		if err := jsonUnmarshal(m.Data, &r); err != nil {
			return
		}
		mu.Lock()
		start, ok := sent[r.ID]
		delete(sent, r.ID)
		if ok {
			res.done++
			if r.Status != envelope.StatusOK {
				res.errors++
			}
			e2e := now.Sub(start)
			res.e2e = append(res.e2e, e2e)
			var vendorTime time.Duration
			for _, a := range r.Attempts {
				vendorTime += time.Duration(a.LatencyMS) * time.Millisecond
			}
			res.added = append(res.added, max(e2e-vendorTime, 0))
		}
		mu.Unlock()
		if inflight > 0 {
			<-slots
		}
	})
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)

	begin := time.Now()
	end := begin.Add(d)
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	for i := 0; time.Now().Before(end); i++ {
		if rate > 0 {
			if wait := time.Until(begin.Add(time.Duration(i) * interval)); wait > 0 {
				time.Sleep(wait)
			}
		} else {
			slots <- struct{}{}
		}
		*seq++
		req := &envelope.Request{ID: fmt.Sprintf("b%d", *seq), Tenant: tenant, Route: "chat",
			Messages: []envelope.Message{{Role: "user", Content: "benchmark request"}}}
		mu.Lock()
		sent[req.ID] = time.Now()
		mu.Unlock()
		if err := c.PublishAsync(req); err != nil {
			return nil, err
		}
	}
	// Let the tail drain, then measure over the sending window.
	drain := time.Now().Add(30 * time.Second)
	for time.Now().Before(drain) {
		mu.Lock()
		left := len(sent)
		mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.elapsed = time.Since(begin)
	return res, nil
}

// benchDirect sends the same load straight to the simulator.
func benchDirect(ctx context.Context, a provider.Adapter, rate, _ int, d time.Duration) *benchResult {
	res := &benchResult{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	begin := time.Now()
	end := begin.Add(d)
	interval := time.Second / time.Duration(rate)
	for i := 0; time.Now().Before(end); i++ {
		if wait := time.Until(begin.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			_, err := a.Complete(ctx, &provider.Request{Model: "gpt-4o-mini", Messages: []envelope.Message{{Role: "user", Content: "benchmark request"}}})
			el := time.Since(start)
			mu.Lock()
			res.done++
			if err != nil {
				res.errors++
			}
			res.e2e = append(res.e2e, el)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(begin)
	return res
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }
