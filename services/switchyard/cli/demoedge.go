package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/services/edge"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// demoEdge sends part of the demo's workload through the HTTP edge, as an
// application using the OpenAI SDK would: POST /v1/chat/completions with
// an API key the demo creates, the route as `model`. The pipeline answers
// on the same reply subject, so the demo's collector and the ledger see
// these requests with the others.
type demoEdge struct {
	url, keyID string
	client     *http.Client
	wg         sync.WaitGroup
	mu         sync.Mutex
	statuses   map[int]int
	sent       int
}

func startDemoEdge(ctx context.Context, sys *app.System, tenant string) (*demoEdge, error) {
	keys, err := apikey.Open(ctx, sys.JS)
	if err != nil {
		return nil, err
	}
	key, rec, err := keys.Create(ctx, tenant, nil)
	if err != nil {
		return nil, err
	}
	// The key travels in a header of every request; the demo prints its id only.
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	d := &demoEdge{url: "http://" + sys.EdgeAddr + "/v1/chat/completions", keyID: rec.ID, statuses: map[int]int{},
		client: &http.Client{Timeout: time.Minute, Transport: roundTripKey{key: key, next: tr}}}
	return d, nil
}

type roundTripKey struct {
	key  string
	next http.RoundTripper
}

func (rt roundTripKey) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+rt.key)
	return rt.next.RoundTrip(r)
}

// send posts one request in the background; its Switchyard fields travel
// as X-Switchyard-* headers, its id as the idempotency key.
func (d *demoEdge) send(ctx context.Context, r *envelope.Request) error {
	body, err := json.Marshal(map[string]any{"model": r.Route, "messages": r.Messages, "max_tokens": r.MaxTokens,
		"user": r.User, "response_format": r.ResponseFormat})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", d.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(edge.HeaderIdempotencyKey, r.ID)
	req.Header.Set(edge.HeaderEndpointTag, "edge."+r.Route)
	req.Header.Set(edge.HeaderPromptVersion, r.PromptVersion)
	d.mu.Lock()
	d.sent++
	d.mu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		status := 0 // no HTTP answer
		if res, err := d.client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			status = res.StatusCode
		}
		d.mu.Lock()
		d.statuses[status]++
		d.mu.Unlock()
	}()
	return nil
}

// report waits for every HTTP answer and prints their statuses.
func (d *demoEdge) report(out io.Writer) {
	d.wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	codes := make([]int, 0, len(d.statuses))
	for c := range d.statuses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	fmt.Fprintf(out, "\n%d of them through the HTTP edge (OpenAI format, key %s, endpoint_tag edge.<route>): HTTP", d.sent, d.keyID)
	for _, c := range codes {
		fmt.Fprintf(out, " %d×%d", d.statuses[c], c)
	}
	fmt.Fprintln(out)
}
