// Package integration boots the whole system in one process — embedded NATS
// JetStream, the vendor simulator, every stage, the ledger on the real local
// ClickHouse — and checks the public contract from a client's side.
package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/report"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

const testPolicy = "../deployments/policy.yaml"

type env struct {
	t      *testing.T
	sys    *app.System
	client *client.Client
	ch     driver.Conn
	db     string
	tenant string
}

type option func(*app.Config)

func clickhouseAddr() string {
	if a := os.Getenv("SWITCHYARD_TEST_CLICKHOUSE_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:9000"
}

// requireClickHouse fails in CI and skips elsewhere when no server answers.
func requireClickHouse(t *testing.T) {
	t.Helper()
	c, err := net.DialTimeout("tcp", clickhouseAddr(), 2*time.Second)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("ClickHouse is required at %s: %v", clickhouseAddr(), err)
		}
		t.Skipf("no ClickHouse at %s (scripts/test.sh starts one): %v", clickhouseAddr(), err)
	}
	_ = c.Close()
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// start boots a system with a fresh data dir, random ports, its own
// ClickHouse database and a tenant unique to the test.
func start(t *testing.T, opts ...option) *env {
	t.Helper()
	requireClickHouse(t)
	// The defaults, whatever the developer's shell holds.
	cfg, err := app.LoadConfig(envcfg.LookupMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Load(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	suffix := randomSuffix()
	cfg.DataDir = t.TempDir()
	cfg.NATSPort = -1
	cfg.SimAddr = "127.0.0.1:0"
	cfg.Sim = app.SimOn
	cfg.HTTPAddr = ""
	cfg.Edge.Addr = "" // withEdge turns it on
	// Tests that start service processes or the CLI connect without
	// credentials; attack_test.go runs the system with auth on (withAuth).
	cfg.NATSAuth = app.AuthOff
	cfg.Policy = pol
	cfg.Scenario = &sim.Scenario{}
	cfg.Ledger.ClickHouseAddr = clickhouseAddr()
	cfg.Ledger.ClickHouseDatabase = "switchyard_it_" + suffix
	cfg.Ledger.FlushInterval = 100 * time.Millisecond
	for _, o := range opts {
		o(&cfg)
	}
	level := zerolog.WarnLevel
	if os.Getenv("SWITCHYARD_TEST_LOG") != "" {
		level = zerolog.DebugLevel
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(level).With().Timestamp().Logger()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := app.Start(ctx, cfg, log)
	if err != nil {
		t.Fatalf("start system: %v", err)
	}
	e := &env{t: t, sys: sys, db: cfg.Ledger.ClickHouseDatabase, tenant: "t" + suffix}
	if e.client, err = client.New(sys.NC); err != nil {
		t.Fatal(err)
	}
	lcfg := cfg.Ledger
	lcfg.ClickHouseAddr = clickhouseAddr()
	lcfg.ClickHouseCluster = "" // e.ch is the single test server whatever the ledger writes to
	if e.ch, err = ledger.Open(ctx, lcfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sys.Stop()
		_ = e.ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+e.db)
		_ = e.ch.Close()
	})
	return e
}

// request builds a valid request for the test's tenant.
func (e *env) request(id, route, prompt string) *envelope.Request {
	return &envelope.Request{
		ID: id, Tenant: e.tenant, Route: route, EndpointTag: "it." + route, PromptVersion: "v1", Environment: "test",
		Messages: []envelope.Message{{Role: "user", Content: prompt}},
	}
}

// submitAll publishes every request and waits for one reply each.
func (e *env) submitAll(reqs []*envelope.Request, wait time.Duration) map[string][]*envelope.Reply {
	e.t.Helper()
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		e.t.Fatal(err)
	}
	defer col.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, r := range reqs {
		if err := e.client.Publish(ctx, r); err != nil {
			e.t.Fatalf("publish %s: %v", r.ID, err)
		}
	}
	ids := map[string]bool{}
	for _, r := range reqs {
		ids[r.ID] = true
	}
	if err := col.Wait(ctx, len(ids)); err != nil {
		e.t.Fatalf("waiting for replies: %v", err)
	}
	return col.All()
}

// settled waits until the pipeline holds no work: LLM_REQUESTS and
// LLM_PIPELINE are work queues, so once both are empty every stage has
// acked what it was given, and a stage acks only after publishing what the
// message caused. Whatever the pipeline will reply for the requests sent so
// far has been replied: a check for a second reply needs no sleep.
func (e *env) settled(wait time.Duration) {
	e.t.Helper()
	ctx := context.Background()
	waitFor(e.t, wait, func() bool {
		for _, name := range []string{natsx.StreamRequests, natsx.StreamPipeline} {
			if !workQueueEmpty(ctx, e.sys.JS, name) {
				return false
			}
		}
		return true
	})
}

// workQueueEmpty reports whether a work-queue stream holds no work: no
// message besides its anchor (natsx.KeepAnchor).
func workQueueEmpty(ctx context.Context, js jetstream.JetStream, name string) bool {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return false
	}
	n, err := natsx.WorkMessages(ctx, s)
	return err == nil && n == 0
}

// anchorSeq is the sequence of a stream's anchor (natsx.KeepAnchor), 0
// while it has none.
func anchorSeq(ctx context.Context, s jetstream.Stream) uint64 {
	m, err := s.GetLastMsgForSubject(ctx, natsx.AnchorSubject(s.CachedInfo().Config.Name))
	if err != nil {
		return 0
	}
	return m.Sequence
}

// anchorWrites is how many of a stream's writes between two reads of its
// anchor's sequence were anchors: KeepAnchor stores a new one only after
// 256 other messages, so a test window shorter than that holds at most one.
func anchorWrites(before, after uint64) uint64 {
	if before != after {
		return 1
	}
	return 0
}

// repliesStored counts the replies LLM_REPLIES holds per reply subject of
// the test's tenant (every reply is stored there, deduplicated by id).
func (e *env) repliesStored() map[string]uint64 {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.sys.JS.Stream(ctx, natsx.StreamReplies)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("llm.replies."+e.tenant+".>"))
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Subjects
}

// count runs a count query until it returns want or the deadline passes,
// and returns the last value seen.
func (e *env) eventually(query string, want uint64, wait time.Duration) uint64 {
	e.t.Helper()
	deadline := time.Now().Add(wait)
	var got uint64
	for {
		got = e.count(query)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) count(query string) uint64 {
	e.t.Helper()
	var n uint64
	q := fmt.Sprintf(query, e.db)
	if err := e.ch.QueryRow(context.Background(), q).Scan(&n); err != nil {
		// Tables may not exist until the ledger has migrated.
		return 0
	}
	return n
}

// simCalls is how many calls the simulator received for a vendor's model.
func (e *env) simCalls(vendor, model string) int64 {
	return e.sys.Sim.Calls().Model(vendor, model).Calls
}

// report renders a report of the last hour as a text table.
func (e *env) report(kind string) string {
	e.t.Helper()
	q := report.Query{Since: time.Now().Add(-time.Hour), Until: time.Now().Add(time.Minute), By: []string{"route"}}
	ctx := context.Background()
	var t *report.Table
	var err error
	switch kind {
	case "cost":
		t, err = report.Cost(ctx, e.ch, e.db, q)
	case "fallbacks":
		t, err = report.Fallbacks(ctx, e.ch, e.db, q)
	default:
		t, err = report.Latency(ctx, e.ch, e.db, q)
	}
	if err != nil {
		e.t.Fatalf("report %s: %v", kind, err)
	}
	var b strings.Builder
	if err := t.Write(&b, "table"); err != nil {
		e.t.Fatal(err)
	}
	return b.String()
}
