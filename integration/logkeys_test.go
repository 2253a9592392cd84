package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// lineSink keeps every log line written to it (and shows it in the test
// log); safe for concurrent writers.
type lineSink struct {
	t      *testing.T
	prefix string
	mu     *sync.Mutex
	lines  *[]string
}

func newLineSink(t *testing.T) *lineSink {
	return &lineSink{t: t, mu: &sync.Mutex{}, lines: &[]string{}}
}

// named shares the sink's lines under another prefix (one per process).
func (s *lineSink) named(prefix string) *lineSink { c := *s; c.prefix = prefix; return &c }

func (s *lineSink) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(p))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	s.mu.Lock()
	defer s.mu.Unlock()
	for sc.Scan() {
		*s.lines = append(*s.lines, sc.Text())
		if testing.Verbose() {
			s.t.Log(s.prefix + sc.Text())
		}
	}
	return len(p), nil
}

func (s *lineSink) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), *s.lines...)
}

// logKeyProblems lists the lines that are not JSON objects with exactly
// one `service` and one `level` key and no key twice.
func logKeyProblems(lines []string) []string {
	var bad []string
	for _, line := range lines {
		if !strings.HasPrefix(line, "{") {
			continue // a process's plain exit message
		}
		dec := json.NewDecoder(strings.NewReader(line))
		counts := map[string]int{}
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			bad = append(bad, "not a JSON object: "+line)
			continue
		}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				bad = append(bad, "unparsable: "+line)
				break
			}
			counts[tok.(string)]++
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				bad = append(bad, "unparsable: "+line)
				break
			}
		}
		var dups []string
		for k, n := range counts {
			if n > 1 {
				dups = append(dups, fmt.Sprintf("%s×%d", k, n))
			}
		}
		if len(dups) > 0 || counts["service"] != 1 || counts["level"] != 1 {
			bad = append(bad, fmt.Sprintf("%v service=%d level=%d: %s", dups, counts["service"], counts["level"], line))
		}
	}
	return bad
}

// Every log line of a short `up` run (debug level: stages, breakers, the
// policy store, the simulator, dead letters) has one `service` and one
// `level` key and no key twice. (Before: 1,100 of 1,113 lines carried two
// `service` keys.)
func TestLogLinesHaveNoDuplicateKeys(t *testing.T) {
	sink := newLineSink(t)
	log := zerolog.New(sink).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	sys := startUp(t, log, map[string]string{"SWITCHYARD_BREAKER_FAILURE_THRESHOLD": "2"}, func(c *app.Config) {
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: sim.Behavior{Status: sim.Ptr(503)}}}}
	})
	c, err := client.New(sys.NC)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 6 {
		req := &envelope.Request{ID: fmt.Sprintf("l%d", i), Tenant: "logs", Route: "chat",
			Messages: []envelope.Message{{Role: "user", Content: "hello"}}}
		if _, err := c.Submit(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	// An envelope intake refuses: error reply plus a dead letter.
	if _, err := c.Submit(ctx, &envelope.Request{ID: "bad", Tenant: "logs", Route: "chat"}); err != nil {
		t.Fatal(err)
	}
	sys.Stop()
	lines := sink.all()
	if len(lines) < 10 {
		t.Fatalf("only %d log lines: the run logged too little to check", len(lines))
	}
	services := map[string]bool{}
	for _, l := range lines {
		var v struct{ Service string }
		if json.Unmarshal([]byte(l), &v) == nil {
			services[v.Service] = true
		}
	}
	if len(services) < 4 {
		t.Fatalf("lines from only %v: the run did not exercise enough services", services)
	}
	if bad := logKeyProblems(lines); len(bad) > 0 {
		t.Fatalf("%d of %d log lines have duplicated or missing keys, e.g.:\n%s", len(bad), len(lines), strings.Join(bad[:min(5, len(bad))], "\n"))
	}
	t.Logf("%d log lines from %d services, each with one service and one level key", len(lines), len(services))
}
