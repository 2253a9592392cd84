package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// raiseNoFile lifts the process's soft open-file limit to n (a process
// may raise it up to its hard limit without privileges).
func raiseNoFile(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= n {
		return nil
	}
	if lim.Max < n {
		return fmt.Errorf("RLIMIT_NOFILE hard limit %d is below %d", lim.Max, n)
	}
	lim.Cur = n
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// idleHolderEnv makes the test binary the holder of the idle connections
// (a child process: both ends of 10,000 connections in one process would
// need more open files than an unprivileged hard limit of 20,000 allows).
const idleHolderEnv = "SWITCHYARD_TEST_IDLE_HOLDER"

// holdIdleConnections opens n connections to addr, each sending unfinished
// headers, prints "opened <n> <duration>", then waits until the server has
// closed every one and prints "closed <n> <duration>".
func holdIdleConnections(addr string, n int) error {
	if err := raiseNoFile(uint64(n + 1000)); err != nil {
		return err
	}
	conns := make([]net.Conn, n)
	began := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for w := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 50 {
				c, err := net.Dial("tcp", addr)
				if err == nil {
					_, err = io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\n")
				}
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Printf("opened %d %s\n", n, time.Since(began))
	began = time.Now()
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, _ = io.Copy(io.Discard, c)
		}()
	}
	wg.Wait()
	fmt.Printf("closed %d %s\n", n, time.Since(began))
	return nil
}

// goroutinesBackTo polls until the process runs at most base+slack
// goroutines: whatever the edge started for a connection or a request has
// ended.
func goroutinesBackTo(t *testing.T, what string, base, slack int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for n := runtime.NumGoroutine(); n > base+slack; n = runtime.NumGoroutine() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after %s: %d goroutines, baseline %d (+%d allowed)\n%s", what, n, base, slack, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readUntilClosed reads what the server sends until it closes the
// connection, and says how long that took.
func readUntilClosed(t *testing.T, conn net.Conn, limit time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(limit))
	got, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %s (got %q)", limit, got)
	}
	return string(got), time.Since(start)
}

// Bad input from the issue: each gets the API's error or is cut by a server
// timeout, nothing leaks goroutines, and the edge keeps serving, also
// while 10,000 idle connections (a slowloris of unfinished headers) are
// open at once.
func TestEdgeBadInputAndIdleConnections(t *testing.T) {
	const idle = 10_000
	if addr := os.Getenv(idleHolderEnv); addr != "" {
		if err := holdIdleConnections(addr, idle); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := raiseNoFile(idle + 5000); err != nil {
		t.Fatal(err)
	}
	e := start(t, withEdge, func(c *app.Config) {
		c.Edge.ReadHeaderTimeout = 3 * time.Second
		c.Edge.ReadTimeout = 1500 * time.Millisecond
		c.Edge.IdleTimeout = time.Second
		c.Edge.MaxHeaderBytes = 8 << 10
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: sim.Behavior{Latency: &sim.Latency{BaseMS: 300}}}}}
	})
	key := e.edgeKey("")
	if r := e.edgeCall("POST", "/v1/chat/completions", bearerKey(key), chatBody("chat", "warm up", "")); r.status != 200 {
		t.Fatalf("warm-up: %d %s", r.status, r.raw)
	}
	http.DefaultClient.CloseIdleConnections()
	base := runtime.NumGoroutine()
	const slack = 40 // the pipeline's own goroutines come and go

	anth := map[string]string{"x-api-key": key, "anthropic-version": "2023-06-01"}
	antBody := func(extra string) string {
		return `{"model":"chat","max_tokens":16,"messages":[{"role":"user","content":"hi"}]` + extra + `}`
	}
	big := strings.Repeat("x", 300<<10)
	tests := []struct {
		name, path string
		hdr        map[string]string
		body       string
		status     int
		errType    string
	}{
		{"openai malformed JSON", "/v1/chat/completions", bearerKey(key), `{"model":"chat","messages":[`, 400, "invalid_request_error"},
		{"openai unknown field", "/v1/chat/completions", bearerKey(key), chatBody("chat", "hi", `,"logit_bias_typo":1`), 400, "invalid_request_error"},
		{"openai missing key", "/v1/chat/completions", nil, chatBody("chat", "hi", ""), 401, "authentication_error"},
		{"openai wrong key", "/v1/chat/completions", bearerKey("sy-wrong"), chatBody("chat", "hi", ""), 401, "authentication_error"},
		{"openai oversize body", "/v1/chat/completions", bearerKey(key), chatBody("chat", big, ""), 413, "invalid_request_error"},
		{"anthropic malformed JSON", "/v1/messages", anth, `{"model":`, 400, "invalid_request_error"},
		{"anthropic unknown field", "/v1/messages", anth, antBody(`,"top_k_typo":3`), 400, "invalid_request_error"},
		{"anthropic missing key", "/v1/messages", map[string]string{"anthropic-version": "2023-06-01"}, antBody(""), 401, "authentication_error"},
		{"anthropic wrong key", "/v1/messages", map[string]string{"x-api-key": "sy-wrong"}, antBody(""), 401, "authentication_error"},
		{"anthropic oversize body", "/v1/messages", anth, `{"model":"chat","max_tokens":16,"messages":[{"role":"user","content":"` + big + `"}]}`, 413, "request_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.edgeCall("POST", tt.path, tt.hdr, tt.body)
			if r.status != tt.status || dig(r.body, "error.type") != tt.errType {
				t.Fatalf("status %d, want %d with error.type %s: %s", r.status, tt.status, tt.errType, r.raw)
			}
			if strings.HasPrefix(tt.path, "/v1/messages") && dig(r.body, "type") != "error" {
				t.Fatalf("not an Anthropic error: %s", r.raw)
			}
		})
	}

	dial := func(t *testing.T) net.Conn {
		t.Helper()
		conn, err := net.Dial("tcp", e.sys.EdgeAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	request := func(body string, contentLength int) string {
		return fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			key, contentLength, body)
	}
	full := chatBody("chat", "raw request", "")

	t.Run("oversize headers", func(t *testing.T) {
		conn := dial(t)
		fmt.Fprintf(conn, "GET /v1/models HTTP/1.1\r\nHost: edge\r\nX-Filler: %s\r\n\r\n", strings.Repeat("y", 16<<10))
		got, _ := readUntilClosed(t, conn, 5*time.Second)
		if !strings.HasPrefix(got, "HTTP/1.1 431 ") {
			t.Fatalf("want 431, got %.80q", got)
		}
	})
	t.Run("slow body", func(t *testing.T) {
		conn := dial(t)
		_, _ = io.WriteString(conn, request(full[:10], len(full))) // the rest never comes
		got, took := readUntilClosed(t, conn, 5*time.Second)
		if took > 3*time.Second || (got != "" && !strings.HasPrefix(got, "HTTP/1.1 400 ")) {
			t.Fatalf("after %s: %.200q", took, got)
		}
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		conn := dial(t)
		_, _ = io.WriteString(conn, request(full, len(full)))
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("keep-alive request: %v %v", res, err)
		}
		res.Body.Close()
		if _, took := readUntilClosed(t, conn, 5*time.Second); took > 3*time.Second {
			t.Fatalf("an idle keep-alive connection was closed after %s", took)
		}
	})
	t.Run("disconnect mid-body", func(t *testing.T) {
		conn := dial(t)
		_, _ = io.WriteString(conn, request(full[:10], len(full)))
		conn.Close()
	})
	t.Run("disconnect while waiting for the answer", func(t *testing.T) {
		conn := dial(t)
		_, _ = io.WriteString(conn, request(full, len(full)))
		time.Sleep(50 * time.Millisecond) // published; the vendor takes 300 ms
		conn.Close()
	})
	goroutinesBackTo(t, "bad input and disconnects", base, slack, 10*time.Second)

	t.Run("10k idle connections", func(t *testing.T) {
		// The holder is this test binary in a child process.
		holder := exec.Command(os.Args[0], "-test.run=^TestEdgeBadInputAndIdleConnections$")
		holder.Env = append(os.Environ(), idleHolderEnv+"="+e.sys.EdgeAddr)
		holder.Stderr = os.Stderr
		stdout, err := holder.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := holder.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = holder.Process.Kill(); _ = holder.Wait() }()
		lines := bufio.NewScanner(stdout)
		next := func(want string) string {
			for lines.Scan() {
				if f := strings.Fields(lines.Text()); len(f) == 3 && f[0] == want && f[1] == fmt.Sprint(idle) {
					return f[2]
				}
			}
			t.Fatalf("the holder of the idle connections did not report %q", want)
			return ""
		}
		opened := next("opened")
		// The server holds a goroutine for each, once it has accepted them
		// from the listen queue (2 s was too short on a loaded machine:
		// 5,650 of 10,000 accepted by then).
		held := time.Now().Add(20 * time.Second)
		for n := runtime.NumGoroutine(); n < base+idle*99/100; n = runtime.NumGoroutine() {
			if time.Now().After(held) {
				t.Fatalf("%d goroutines with %d connections open (baseline %d): the server does not hold them", n, idle, base)
			}
			time.Sleep(10 * time.Millisecond)
		}
		reqStart := time.Now()
		if r := e.edgeCall("POST", "/v1/chat/completions", bearerKey(key), chatBody("chat", "with 10k idle connections open", "")); r.status != 200 {
			t.Fatalf("a normal request beside %d idle connections: %d %s", idle, r.status, r.raw)
		}
		t.Logf("%d connections opened in %s; a normal request took %s beside them", idle, opened, time.Since(reqStart))
		// ReadHeaderTimeout (3 s) cuts them all.
		closed := next("closed")
		if d, err := time.ParseDuration(closed); err != nil || d > 6*time.Second {
			t.Fatalf("the server closed the idle connections after %s", closed)
		}
		t.Logf("the server cut all %d within %s of their opening", idle, closed)
		goroutinesBackTo(t, "the idle connections' header timeout", base, slack, 10*time.Second)
	})
	if r := e.edgeCall("POST", "/v1/chat/completions", bearerKey(key), chatBody("chat", "still serving", "")); r.status != 200 {
		t.Fatalf("after the idle connections: %d %s", r.status, r.raw)
	}
	http.DefaultClient.CloseIdleConnections()
	goroutinesBackTo(t, "everything", base, slack, 10*time.Second)
}
