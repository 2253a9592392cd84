package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/services/edge"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
	"github.com/switchyard-llm/switchyard/services/switchyard/cli"
)

// secondEdge starts another edge replica on the system's NATS: the same
// key bucket, policy and pipeline, its own listener.
func (e *env) secondEdge() string {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	keys, err := apikey.Open(ctx, e.sys.JS)
	if err != nil {
		e.t.Fatal(err)
	}
	ecfg, err := app.LoadConfig(func(string) (string, bool) { return "", false })
	if err != nil {
		e.t.Fatal(err)
	}
	ecfg.Edge.Addr = "127.0.0.1:0"
	ed, err := edge.New(ecfg.Edge, edge.Deps{Log: zerolog.New(zerolog.NewTestWriter(e.t)).Level(zerolog.WarnLevel),
		NC: e.sys.NC, JS: e.sys.JS, Policy: e.sys.Policies, Keys: keys})
	if err != nil {
		e.t.Fatal(err)
	}
	go func() { _ = ed.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); ed.Wait() })
	return ed.Addr()
}

// keysCreate runs `switchyard keys create` with extra flags.
func (e *env) keysCreate(args ...string) string {
	e.t.Helper()
	e.t.Setenv("SWITCHYARD_NATS_URL", e.sys.NATSURL)
	var out, errOut bytes.Buffer
	if code := cli.Main(context.Background(), append([]string{"keys", "create", "--tenant", e.tenant}, args...), &out, &errOut); code != 0 {
		e.t.Fatalf("keys create %v: exit %d: %s", args, code, errOut.String())
	}
	return strings.TrimSpace(out.String())
}

// post sends one chat request to an edge replica (OpenAI, or Anthropic
// when anthropic is set) and returns the status, retry-after and body.
func post(t *testing.T, addr, key string, anthropic bool, prompt string) (int, string, map[string]any) {
	t.Helper()
	path, body := "/v1/chat/completions", chatBody("chat", prompt, "")
	if anthropic {
		path, body = "/v1/messages", fmt.Sprintf(`{"model":"chat","max_tokens":32,"messages":[{"role":"user","content":%q}]}`, prompt)
	}
	req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Errorf("POST %s: %v", path, err)
		return 0, "", nil
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, res.Header.Get("retry-after"), out
}

// Per-key limits with two edge replicas: the rpm limit and max in flight
// hold across both (their counts are shared); over a
// limit the answer is 429 in the API's own format with retry-after. The
// keys are created after the replicas started and `keys ls` shows the limits.
func TestEdgeKeyLimitsTwoReplicas(t *testing.T) {
	e := start(t, withEdge, func(c *app.Config) {
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: sim.Behavior{Latency: &sim.Latency{BaseMS: 400}}}}}
	})
	replicas := []string{e.sys.EdgeAddr, e.secondEdge()}
	rpmKey := e.keysCreate("--rpm", "6")
	flightKey := e.keysCreate("--max-in-flight", "2")

	var out, errOut bytes.Buffer
	if code := cli.Main(context.Background(), []string{"keys", "ls"}, &out, &errOut); code != 0 {
		t.Fatalf("keys ls: %d %s", code, errOut.String())
	}
	for _, tc := range []struct{ key, rpm, inflight string }{{rpmKey, "6", "-"}, {flightKey, "-", "2"}} {
		fields := []string{}
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(line, apikey.Hash(tc.key)[:16]) {
				fields = strings.Fields(line)
			}
		}
		if len(fields) < 5 || fields[3] != tc.rpm || fields[4] != tc.inflight {
			t.Fatalf("keys ls row of %s: %q, want rpm %s, max in flight %s\n%s", apikey.Hash(tc.key)[:16], fields, tc.rpm, tc.inflight, out.String())
		}
	}

	t.Run("rpm across replicas", func(t *testing.T) {
		// Six at once, three on each replica: all fit.
		var wg sync.WaitGroup
		statuses := make([]int, 6)
		for i := range statuses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[i], _, _ = post(t, replicas[i%2], rpmKey, false, fmt.Sprintf("rpm %d", i))
			}()
		}
		wg.Wait()
		if slices.ContainsFunc(statuses, func(s int) bool { return s != 200 }) {
			t.Fatalf("the first six requests: %v, want all 200", statuses)
		}
		// The seventh is refused on either replica, in either format.
		for i, addr := range replicas {
			anthropic := i == 1
			status, ra, body := post(t, addr, rpmKey, anthropic, "one too many")
			n, err := strconv.Atoi(ra)
			if status != 429 || err != nil || n < 1 || n > 60 {
				t.Fatalf("replica %d: status %d retry-after %q: %v", i, status, ra, body)
			}
			if anthropic {
				if dig(body, "type") != "error" || dig(body, "error.type") != "rate_limit_error" {
					t.Fatalf("not an Anthropic rate limit error: %v", body)
				}
			} else if dig(body, "error.code") != "rate_limit_exceeded" || dig(body, "error.type") != "rate_limit_error" {
				t.Fatalf("not an OpenAI rate limit error: %v", body)
			}
		}
	})

	t.Run("max in flight across replicas", func(t *testing.T) {
		started, err := e.sys.NC.SubscribeSync("llm.telemetry.attempt")
		if err != nil {
			t.Fatal(err)
		}
		defer started.Unsubscribe()
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		for i := range statuses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[i], _, _ = post(t, replicas[i%2], flightKey, false, fmt.Sprintf("slow %d", i))
			}()
		}
		// Both are at the vendor (400 ms) once two calls have started.
		for range 2 {
			if _, err := started.NextMsg(10 * time.Second); err != nil {
				t.Fatalf("the two requests did not start: %v", err)
			}
		}
		// One in flight on each replica: a third is refused on either.
		for i, addr := range replicas {
			status, ra, body := post(t, addr, flightKey, i == 1, "a third")
			if status != 429 || ra != "1" || dig(body, "error.type") != "rate_limit_error" {
				t.Fatalf("a third request in flight, on replica %d: %d retry-after %q %v", i, status, ra, body)
			}
		}
		wg.Wait()
		if statuses[0] != 200 || statuses[1] != 200 {
			t.Fatalf("the two first requests: %v", statuses)
		}
		// Slots are given back once answered (the release follows the
		// answer by a KV round trip: poll).
		waitFor(t, 5*time.Second, func() bool {
			status, _, _ := post(t, replicas[0], flightKey, false, "after")
			return status == 200
		})
	})
}

// GET /v1/models through the official SDKs' client.models.list(): the
// OpenAI list for a bearer client, the Anthropic Models API page format
// (walked page by page) for an Anthropic client, both holding exactly what
// the key may use; a bad key raises each SDK's AuthenticationError.
func TestEdgeModelsSDKs(t *testing.T) {
	dir := sdkDir(t)
	e := start(t, withEdge)
	pol := e.sys.Policies.Current()
	all := []string{"auto"}
	for _, rt := range pol.Routes {
		all = append(all, "route:"+rt.Name)
	}
	for _, m := range pol.Models {
		all = append(all, m.Vendor+"/"+m.Model)
	}
	tests := []struct {
		name, routes string
		want         []string
	}{
		{"every model", "", all},
		{"route allow-list", "chat,extract", []string{"route:chat", "route:extract"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := e.edgeKey(tt.routes)
			cmd := exec.Command("node", "models.mjs")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "EDGE_URL=http://"+e.sys.EdgeAddr, "EDGE_KEY="+key, "PAGE_LIMIT=3")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			raw, err := cmd.Output()
			if err != nil {
				t.Fatalf("node models.mjs: %v\n%s", err, stderr.String())
			}
			var got struct {
				OpenAI, Anthropic []string
				AnthropicPages    int
				Errors            map[string]string
			}
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("models.mjs printed %q: %v", raw, err)
			}
			if !slices.Equal(got.OpenAI, tt.want) || !slices.Equal(got.Anthropic, tt.want) {
				t.Fatalf("openai %v\nanthropic %v\nwant %v", got.OpenAI, got.Anthropic, tt.want)
			}
			if wantPages := (len(tt.want) + 2) / 3; got.AnthropicPages != wantPages {
				t.Fatalf("the Anthropic SDK walked %d pages of 3, want %d", got.AnthropicPages, wantPages)
			}
			if got.Errors["openai"] != "AuthenticationError 401" || got.Errors["anthropic"] != "AuthenticationError 401 authentication_error" {
				t.Fatalf("bad key: %v", got.Errors)
			}
		})
	}
	// The format follows the client: anthropic-version or x-api-key make it Anthropic's.
	key := e.edgeKey("")
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		anth bool
	}{
		{"bearer", bearerKey(key), false},
		{"x-api-key", map[string]string{"x-api-key": key}, true},
		{"bearer with anthropic-version", map[string]string{"Authorization": "Bearer " + key, "anthropic-version": "2023-06-01"}, true},
	} {
		r := e.edgeCall("GET", "/v1/models", tc.hdr, "")
		_, hasMore := r.body["has_more"]
		if r.status != 200 || hasMore != tc.anth || (r.body["object"] == "list") == tc.anth {
			t.Errorf("%s: %d %s", tc.name, r.status, r.raw)
		}
	}
	if r := e.edgeCall("GET", "/v1/models?limit=0", map[string]string{"x-api-key": key}, ""); r.status != 400 || dig(r.body, "error.type") != "invalid_request_error" {
		t.Errorf("limit=0: %d %s", r.status, r.raw)
	}
}
