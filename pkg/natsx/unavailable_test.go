package natsx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/faultnet"
)

func TestUnavailableTellsNotNowFromNo(t *testing.T) {
	api := func(status int, code jetstream.ErrorCode, desc string) error {
		return fmt.Errorf("stream S: %w", &jetstream.APIError{Code: status, ErrorCode: code, Description: desc})
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"no stream response", jetstream.ErrNoStreamResponse, true},
		{"no responders", nats.ErrNoResponders, true},
		{"reconnecting", nats.ErrConnectionReconnecting, true},
		{"503 temporarily unavailable", api(http.StatusServiceUnavailable, 10008, "JetStream system temporarily unavailable"), true},
		{"meta leader being elected", api(http.StatusInternalServerError, 10009, "JetStream cluster can not handle request"), true},
		{"no peers: peer offline", api(http.StatusBadRequest, 10005, "no suitable peers for placement, peer offline"), true},
		{"no peers: not all met yet", api(http.StatusBadRequest, 10005, "no suitable peers for placement"), true},
		{"no peers: peer info pending", api(http.StatusBadRequest, 10005, "no suitable peers for placement, miscellaneous issue"), true},
		{"no peers: insufficient storage", api(http.StatusBadRequest, 10005, "no suitable peers for placement, insufficient storage"), false},
		{"no peers: tags not matched", api(http.StatusBadRequest, 10005, "no suitable peers for placement, tags not matched ['az:x']"), false},
		{"replicas on a single server", api(http.StatusInternalServerError, 10074, "replicas > 1 not supported in non-clustered mode"), false},
		{"subjects overlap", api(http.StatusBadRequest, 10065, "subjects overlap with an existing stream"), false},
		{"other error", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Unavailable(tt.err); got != tt.want {
				t.Fatalf("Unavailable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// A service starting with its NATS server whose JetStream is not up yet
// waits for it instead of exiting; one asking for something JetStream
// refuses fails at once. An API request sent as the server goes away is
// never answered: it is retried after its own short timeout, not after the
// caller's deadline (10 s here; before, the whole start-up budget).
func TestEnsureTopologyAtStart(t *testing.T) {
	tests := []struct {
		name       string
		replicas   int
		jsLater    time.Duration // replace the server by one with JetStream this long after the first call
		loseFirst  bool          // the first request is sent into a connection that is then cut
		wantErr    bool
		within     time.Duration
		wantErrMsg string
	}{
		{"jetstream up a moment later", 1, 700 * time.Millisecond, false, false, 5 * time.Second, ""},
		{"a request lost as the connection is cut", 1, 0, true, false, 3 * time.Second, ""},
		{"replicas a single server cannot place", 3, 0, false, true, time.Second, "replicas > 1 not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := startServer(t, server.Options{JetStream: tt.jsLater == 0, StoreDir: t.TempDir()})
			proxy, url := proxied(t, ns)
			nc := connectReconnecting(t, url)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			if tt.jsLater > 0 {
				replaceServer(t, proxy, ns, tt.jsLater, 0, server.Options{JetStream: true, StoreDir: t.TempDir()})
			}
			if tt.loseFirst {
				// The held request goes nowhere once the connection is
				// cut; the client reconnects 20 ms later.
				proxy.Stall()
				cut := time.AfterFunc(300*time.Millisecond, func() {
					proxy.Retarget(ns.Addr().String())
					proxy.Heal()
				})
				t.Cleanup(func() { cut.Stop() })
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			topo := DefaultTopology()
			topo.Replicas = tt.replicas
			start := time.Now()
			err = EnsureTopology(ctx, js, topo)
			took := time.Since(start)
			t.Logf("EnsureTopology after %s: %v", took.Round(time.Millisecond), err)
			if (err != nil) != tt.wantErr || (err != nil && !strings.Contains(err.Error(), tt.wantErrMsg)) {
				t.Fatalf("EnsureTopology: %v, want error %v (%q)", err, tt.wantErr, tt.wantErrMsg)
			}
			if took > tt.within {
				t.Fatalf("EnsureTopology took %s, want at most %s", took, tt.within)
			}
			if !tt.wantErr {
				if _, err := js.Stream(ctx, StreamRequests); err != nil {
					t.Fatalf("stream %s after EnsureTopology: %v", StreamRequests, err)
				}
			}
		})
	}
}

// Buckets are created at start like streams: a bucket asked for before
// JetStream is up is created once it is, not given up on (the response
// cache's CreateOrUpdateKV gave up at once before).
func TestOpenOrCreateKVWaitsForJetStream(t *testing.T) {
	for _, tt := range []struct {
		name string
		open func(context.Context, jetstream.JetStream, jetstream.KeyValueConfig) (jetstream.KeyValue, error)
	}{
		{"OpenOrCreateKV", OpenOrCreateKV},
		{"CreateOrUpdateKV", CreateOrUpdateKV},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := startServer(t, server.Options{})
			proxy, url := proxied(t, ns)
			nc := connectReconnecting(t, url)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			replaceServer(t, proxy, ns, 500*time.Millisecond, 0, server.Options{JetStream: true, StoreDir: t.TempDir()})
			var logged bytes.Buffer
			ctx, cancel := context.WithTimeout(zerolog.New(&logged).WithContext(context.Background()), 10*time.Second)
			defer cancel()
			kv, err := tt.open(ctx, js, jetstream.KeyValueConfig{Bucket: "b"})
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if !strings.Contains(logged.String(), `"what":"bucket b"`) || !strings.Contains(logged.String(), "jetstream not ready at start; retrying") {
				t.Fatalf("retries not logged: %q", logged.String())
			}
			if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
				t.Fatalf("put into the bucket: %v", err)
			}
		})
	}
}

// A consumer asked for while JetStream is not answering (a node
// restarting, a cluster forming) is created once it answers: what
// `switchyard provision` relies on for each stage's consumer.
func TestEnsureConsumerWaitsForJetStream(t *testing.T) {
	store := t.TempDir()
	ns := startServer(t, server.Options{JetStream: true, StoreDir: store})
	proxy, url := proxied(t, ns)
	nc := connectReconnecting(t, url)
	// While the server restarts each call fails or times out (the API
	// timeout, shortened here), which is retried.
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	// Down now, back 1.5 s later with its store (and the stream): longer
	// than a start-up attempt's first timeout (1 s), so the first attempt
	// fails and is retried. Down for less, a request held by the stalled
	// connection could be answered by the new server within that timeout,
	// and there would be no retry to see (clean-clone CI: created after
	// 550 ms, nothing logged).
	replaceServer(t, proxy, ns, 0, 1500*time.Millisecond, server.Options{JetStream: true, StoreDir: store})
	var logged bytes.Buffer // no deadline: each call has the API timeout
	start := time.Now()
	c, err := EnsureConsumer(zerolog.New(&logged).WithContext(ctx), js, "S", jetstream.ConsumerConfig{Durable: "d", FilterSubject: "s.x", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("EnsureConsumer: %v; log %s", err, logged.String())
	}
	if took := time.Since(start); took < 1400*time.Millisecond || !strings.Contains(logged.String(), `"what":"consumer S/d"`) {
		t.Fatalf("created after %v without waiting for JetStream (retries logged: %q)", took, logged.String())
	}
	if got := c.CachedInfo().Config.FilterSubject; got != "s.x" {
		t.Fatalf("consumer filter %q", got)
	}
	// Again with another setting: updated in place.
	c, err = EnsureConsumer(ctx, js, "S", jetstream.ConsumerConfig{Durable: "d", FilterSubject: "s.y", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil || c.CachedInfo().Config.FilterSubject != "s.y" {
		t.Fatalf("EnsureConsumer again: %v, want the filter updated", err)
	}
}

// startServer runs a NATS server on a free loopback port with opts.
func startServer(t *testing.T, opts server.Options) *server.Server {
	t.Helper()
	if opts.Port == 0 {
		opts.Port = -1
	}
	opts.Host, opts.NoSigs = "127.0.0.1", true
	ns, err := server.NewServer(&opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	return ns
}

// connectReconnecting connects to url and reconnects quickly forever.
func connectReconnecting(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// replaceServer keeps ns up for upFor, then stalls the clients' traffic
// (what they see of a node going away: calls time out), shuts ns down, and
// downFor later starts a server with opts that the clients reach through
// the same proxy address, where they reconnect. Neither enabling JetStream
// on the running server (it races, inside nats-server, with the API
// requests it answers: the race detector caught it in CI) nor restarting
// on the same port (another test may take it meanwhile) is safe.
func replaceServer(t *testing.T, proxy *faultnet.Proxy, ns *server.Server, upFor, downFor time.Duration, opts server.Options) {
	t.Helper()
	done := make(chan struct{})
	stop := make(chan struct{})
	wait := func(d time.Duration) bool {
		select {
		case <-stop:
			return false
		case <-time.After(d):
			return true
		}
	}
	go func() {
		defer close(done)
		if !wait(upFor) {
			return
		}
		proxy.Stall()
		ns.Shutdown()
		ns.WaitForShutdown()
		if !wait(downFor) {
			return
		}
		opts.Host, opts.Port, opts.NoSigs = "127.0.0.1", -1, true
		next, err := server.NewServer(&opts)
		if err != nil {
			t.Error(err)
			return
		}
		go next.Start()
		defer next.Shutdown()
		if !next.ReadyForConnections(5 * time.Second) {
			t.Error("replacement server not ready")
			return
		}
		proxy.Retarget(next.Addr().String())
		proxy.Heal()
		<-stop
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// proxied puts a fault proxy in front of ns; clients connect to its URL.
func proxied(t *testing.T, ns *server.Server) (*faultnet.Proxy, string) {
	t.Helper()
	p, err := faultnet.Start(ns.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Down)
	return p, "nats://" + p.Addr()
}
