package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// TestVendorKeyNeverStored: a vendor key comes from the environment only.
// A vendor that echoes it in an error (OpenAI's 401 does) and one that
// answers are called with it, and afterwards the key is in no reply, no
// message of any stream or KV bucket (replies, dead letters, alerts,
// policy, breakers, budgets, cache …) and no ClickHouse row.
func TestVendorKeyNeverStored(t *testing.T) {
	const key = "sk-it-SECRET-4f1c9a"
	t.Setenv("SWITCHYARD_IT_VENDOR_KEY", key)
	var calls, keyed atomic.Int64
	vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("Authorization") == "Bearer "+key {
			keyed.Add(1)
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(string(body), "please fail") {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s","type":"invalid_request_error","code":"invalid_api_key"}}`, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			return
		}
		fmt.Fprint(w, `{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"fine"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`)
	}))
	defer vendor.Close()
	e := start(t, withAuth, func(c *app.Config) {
		c.Sim = app.SimOff
		for name, v := range c.Policy.Vendors {
			v.BaseURL, v.APIKeyEnv = vendor.URL+"/unused", "" // never called: requests pin openai
			if name == "openai" {
				v.BaseURL, v.APIKeyEnv = vendor.URL+"/v1", "SWITCHYARD_IT_VENDOR_KEY"
			}
			c.Policy.Vendors[name] = v
		}
	})

	var reqs []*envelope.Request
	for i, prompt := range []string{"hello", "please fail"} {
		r := e.request(fmt.Sprintf("k%d", i), "chat", prompt)
		r.Route, r.Model = "", "openai/gpt-4o-mini" // the key's vendor only
		reqs = append(reqs, r)
	}
	replies := e.submitAll(reqs, 30*time.Second)
	if calls.Load() < 2 || keyed.Load() != calls.Load() {
		t.Fatalf("vendor calls %d, %d with the key: the test proves nothing", calls.Load(), keyed.Load())
	}
	for id, rs := range replies {
		for _, r := range rs {
			b, _ := json.Marshal(r)
			if strings.Contains(string(b), key) {
				t.Errorf("reply %s holds the key: %s", id, b)
			}
		}
	}
	if r := replies["k1"]; len(r) != 1 || r[0].Status != envelope.StatusError {
		t.Fatalf("the echoing vendor's request: %+v, want an error reply", r)
	}
	e.settled(10 * time.Second)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL WHERE tenant = '"+e.tenant+"'", 2, 30*time.Second); got != 2 {
		t.Fatalf("ledger rows %d, want 2", got)
	}

	ctx := context.Background()
	streams := e.sys.JS.ListStreams(ctx)
	scanned := 0
	for info := range streams.Info() {
		s, err := e.sys.JS.Stream(ctx, info.Config.Name)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				continue // deleted (acked work queue messages, KV history)
			}
			scanned++
			if strings.Contains(string(m.Data), key) || strings.Contains(fmt.Sprint(m.Header), key) {
				t.Errorf("stream %s seq %d (%s) holds the key", info.Config.Name, seq, m.Subject)
			}
		}
	}
	if err := streams.Err(); err != nil && err != jetstream.ErrEndOfData {
		t.Fatal(err)
	}
	if scanned == 0 {
		t.Fatal("no stored message scanned")
	}

	for _, table := range []string{"attempts", "requests"} {
		rows, err := e.ch.Query(ctx, "SELECT * FROM "+e.db+"."+table)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
			vals := make([]any, len(rows.ColumnTypes()))
			for i, ct := range rows.ColumnTypes() {
				vals[i] = reflect.New(ct.ScanType()).Interface()
			}
			if err := rows.Scan(vals...); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				if strings.Contains(fmt.Sprint(reflect.ValueOf(v).Elem().Interface()), key) {
					t.Errorf("ClickHouse %s.%s holds the key", table, rows.Columns()[i])
				}
			}
		}
		_ = rows.Close()
		if n == 0 {
			t.Fatalf("no %s row scanned", table)
		}
	}
}
