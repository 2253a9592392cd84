package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// docQuery is one SQL statement found in a ```sql block of the docs.
type docQuery struct {
	where string // file:line of the block
	sql   string
}

// docQueries extracts every statement of every ```sql block in README.md
// and docs/*.md. Statements end at ';' or at a blank line.
func docQueries(t *testing.T) []docQuery {
	t.Helper()
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []docQuery
	for _, f := range append([]string{"../README.md"}, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) != "```sql" {
				continue
			}
			start := i + 1
			var block []string
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				block = append(block, lines[i])
			}
			for _, para := range strings.Split(strings.Join(block, "\n"), "\n\n") {
				for _, stmt := range strings.Split(para, ";") {
					if hasSQL(stmt) {
						out = append(out, docQuery{where: fmt.Sprintf("%s:%d", filepath.Base(f), start), sql: strings.TrimSpace(stmt)})
					}
				}
			}
		}
	}
	return out
}

// hasSQL reports whether s has a line that is not a comment.
func hasSQL(s string) bool {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "--") {
			return true
		}
	}
	return false
}

var (
	// conditionDef is a report condition's definition in docs/ledger.md:
	// "- `<called>` — the vendor was called …: `error_class NOT IN (…)`".
	conditionDef = regexp.MustCompile("(?s)- `<(\\w+)>` — [^`]*?`([^`]+)`")
	docDB        = regexp.MustCompile(`\b(switchyard|db)\.`)
	sinceParam   = regexp.MustCompile(`ts >= toDateTime\(\?\)`)
	untilParam   = regexp.MustCompile(`ts < toDateTime\(\?\)`)
)

// runnable turns a documented statement into one for the test database:
// the database name, and the placeholders of the documented report and
// alert queries (<dims>, <where>, ? bounds) filled with a route grouping
// and the last day.
func runnable(sql, db string, conditions map[string]string) string {
	sql = docDB.ReplaceAllString(sql, db+".")
	for name, expr := range conditions {
		sql = strings.ReplaceAll(sql, "<"+name+">", "("+expr+")")
	}
	sql = strings.ReplaceAll(sql, "SELECT <names> ", "SELECT route, ")
	sql = strings.ReplaceAll(sql, "SELECT <dims> ", "SELECT route, ")
	sql = strings.ReplaceAll(sql, "<dims>", "route")
	sql = strings.ReplaceAll(sql, "<where>", "WHERE ts >= now() - INTERVAL 1 DAY")
	sql = sinceParam.ReplaceAllString(sql, "ts >= now() - INTERVAL 1 DAY")
	return untilParam.ReplaceAllString(sql, "ts < now() + INTERVAL 1 HOUR")
}

// Every SQL query in the README and docs runs on the data a short real
// pipeline run just wrote (fallbacks during a vendor outage, an attempt
// whose model has no price) and returns rows; the README's fallback query
// returns one row per route with each reason counted once, not one tuple
// per request.
func TestDocumentedQueriesRunOnFreshData(t *testing.T) {
	e := start(t)
	var reqs []*envelope.Request
	phase := func(name string, n int) {
		var batch []*envelope.Request
		for i := range n {
			for _, route := range []string{"chat", "summarize"} {
				batch = append(batch, e.request(fmt.Sprintf("%s-%s-%d", name, route, i), route, "Please summarize: the quick brown fox"))
			}
		}
		e.submitAll(batch, 60*time.Second)
		reqs = append(reqs, batch...)
	}
	phase("healthy", 5)
	if _, err := e.sys.Sim.PatchScenario([]byte(`{"vendors":{"openai":{"status":503},"anthropic":{"status":503}}}`)); err != nil {
		t.Fatal(err)
	}
	phase("outage", 10)
	if _, err := e.sys.Sim.PatchScenario([]byte(`{"vendors":{"openai":{"status":null},"anthropic":{"status":null}}}`)); err != nil {
		t.Fatal(err)
	}
	// An executor calling a model the catalog does not price: the ledger
	// stores its attempt with price_known = 0.
	ev := envelope.AttemptEvent{RequestID: "unpriced-1", AttemptID: e.tenant + ".unpriced-1#1", Attempt: 1, TS: time.Now().UTC(), Tenant: e.tenant,
		Route: "chat", Strategy: "fallback", Vendor: "openai", Model: "gpt-unlisted", Outcome: envelope.OutcomeOK, InputTokens: 10, OutputTokens: 5, LatencyMS: 20}
	data, _ := json.Marshal(ev)
	m := &nats.Msg{Subject: natsx.SubjectAttempt, Data: data, Header: nats.Header{natsx.HeaderMsgID: {ev.AttemptID}}}
	if _, err := e.sys.JS.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	requests := uint64(len(reqs))
	if got := e.eventually("SELECT count() FROM %s.requests FINAL", requests, 30*time.Second); got != requests {
		t.Fatalf("requests stored: %d of %d", got, requests)
	}
	if got := e.eventually("SELECT count() FROM %s.attempts FINAL WHERE price_known = 0", 1, 30*time.Second); got != 1 {
		t.Fatalf("unpriced attempts stored: %d", got)
	}
	if got := e.count("SELECT count() FROM %s.requests FINAL WHERE fallback = 1"); got == 0 {
		t.Fatal("the outage produced no fallback")
	}

	ledgerDoc, err := os.ReadFile("../docs/ledger.md")
	if err != nil {
		t.Fatal(err)
	}
	conditions := map[string]string{}
	for _, m := range conditionDef.FindAllStringSubmatch(string(ledgerDoc), -1) {
		conditions[m[1]] = m[2]
	}
	for _, name := range []string{"called", "concluded", "failed", "answered", "abandoned"} {
		if conditions[name] == "" {
			t.Fatalf("docs/ledger.md defines no <%s> condition", name)
		}
	}
	queries := docQueries(t)
	if len(queries) < 20 {
		t.Fatalf("found only %d documented queries", len(queries))
	}
	ctx := context.Background()
	for _, q := range queries {
		sql := runnable(q.sql, e.db, conditions)
		rows, err := e.ch.Query(ctx, sql)
		if err != nil {
			t.Errorf("%s: %v\n%s", q.where, err, sql)
			continue
		}
		n := 0
		for rows.Next() {
			n++
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			t.Errorf("%s: %v\n%s", q.where, err, sql)
			continue
		}
		// A query documented as "empty when …" (abandoned calls) may find
		// nothing on a healthy run.
		if n == 0 && !strings.Contains(q.sql, "empty when") {
			t.Errorf("%s: no rows on fresh data\n%s", q.where, sql)
		}
		if strings.Contains(q.sql, "AS reasons") {
			checkAggregatedReasons(t, q.where, sql, e, uint64(n), requests)
		}
	}
	t.Logf("%d documented queries ran on %d requests", len(queries), requests)
}

// checkAggregatedReasons: the fallback query has fewer rows than requests
// and lists each reason once per row.
func checkAggregatedReasons(t *testing.T, where, sql string, e *env, rows, requests uint64) {
	t.Helper()
	if rows >= requests {
		t.Errorf("%s: %d rows for %d requests: not aggregated", where, rows, requests)
	}
	var dup uint64
	q := "SELECT toUInt64(max(length(reasons) - length(arrayReduce('groupUniqArray', arrayMap(x -> tupleElement(x, 1), reasons))))) FROM (" + sql + ")"
	if err := e.ch.QueryRow(context.Background(), q).Scan(&dup); err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	if dup != 0 {
		t.Errorf("%s: a row lists the same fallback reason more than once", where)
	}
}
