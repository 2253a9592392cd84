package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// ackDropper is a client connection that loses the first JetStream ack
// naming stream (the server stored the message; the client never hears
// so), which is what a partition did to the executor's started event.
type ackDropper struct {
	net.Conn
	stream  []byte
	dropped *atomic.Bool
	mu      sync.Mutex
	in, out []byte // read from the server, not parsed yet; parsed, not yet returned
}

func (c *ackDropper) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.out) == 0 {
		buf := make([]byte, 32<<10)
		n, err := c.Conn.Read(buf)
		c.in = append(c.in, buf[:n]...)
		c.parse()
		if err != nil && len(c.out) == 0 {
			return 0, err
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// parse moves every whole protocol line (and MSG/HMSG payload) from in to
// out, leaving out the first ack of c.stream.
func (c *ackDropper) parse() {
	for {
		eol := bytes.Index(c.in, []byte("\r\n"))
		if eol < 0 {
			return
		}
		frame := eol + 2
		line := c.in[:eol]
		if bytes.HasPrefix(line, []byte("MSG ")) || bytes.HasPrefix(line, []byte("HMSG ")) {
			f := bytes.Fields(line)
			size, _ := strconv.Atoi(string(f[len(f)-1]))
			if len(c.in) < frame+size+2 {
				return
			}
			payload := c.in[frame : frame+size]
			frame += size + 2
			if bytes.Contains(payload, c.stream) && c.dropped.CompareAndSwap(false, true) {
				c.in = c.in[frame:]
				continue
			}
		}
		c.out = append(c.out, c.in[:frame]...)
		c.in = c.in[frame:]
	}
}

// keptAlive records when the handler said it is still working on the
// message.
type keptAlive struct {
	redelivered
	mu *sync.Mutex
	at *[]time.Time
}

func (m keptAlive) InProgress() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.at = append(*m.at, time.Now())
	return nil
}

type ackDropDialer struct {
	stream  string
	dropped *atomic.Bool
}

func (d ackDropDialer) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &ackDropper{Conn: c, stream: []byte(`"stream":"` + d.stream + `"`), dropped: d.dropped}, nil
}

// The started event's publish whose ack is lost (the event stored) is
// published again with the same id, so the stream keeps one started event
// and the vendor call has one attempt id. Before, the handler returned the
// publish error, the redelivery called the vendor under a new attempt id
// (k#1@2), and the ledger held a started row for a call never made. The
// message is kept alive meanwhile (a try that outlasts AckWait must not
// have the work redelivered to a second handler), and the vendor is called
// even when the retry used up the attempt's budget.
func TestLostStartedAckMakesNoSecondAttempt(t *testing.T) {
	for _, tt := range []struct {
		name            string
		attemptDeadline time.Duration // from the start; 0: none
	}{
		{"no attempt deadline", 0},
		// The lost ack's try (5 s) outlasts the attempt's budget: before,
		// the started event was stored and the call, out of time, never
		// reached the vendor.
		{"attempt deadline shorter than one try", 3 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lostStartedAck(t, tt.attemptDeadline)
		})
	}
}

func lostStartedAck(t *testing.T, attemptDeadline time.Duration) {
	url := testkit.Server(t)
	var dropped atomic.Bool
	nc, err := nats.Connect(url, nats.SetCustomDialer(ackDropDialer{stream: natsx.StreamTelemetry, dropped: &dropped}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var calls atomic.Int32
	e := testExecutor(t, adapterFunc(func(ctx context.Context, r *provider.Request) (*provider.Response, error) {
		if ctx.Err() != nil {
			return nil, ctx.Err() // as net/http: a request out of time is never sent
		}
		calls.Add(1)
		return answer(ctx, r)
	}))
	e.d.JS, e.pub = js, pipeline.Publisher{JS: js, NC: nc}
	e.cfg.AckWait = 3 * time.Second // shorter than one publish try
	w := work(time.Now())
	if attemptDeadline > 0 {
		w.AttemptDeadline = time.Now().Add(attemptDeadline)
	}
	data, _ := json.Marshal(w)
	// Delivered again while the handler fails, as JetStream would.
	var handled bool
	var mu sync.Mutex
	var alive []time.Time
	for delivery := uint64(1); delivery <= 3 && !handled; delivery++ {
		d := &pipeline.Delivery{Msg: keptAlive{redelivered: redelivered{data: data}, mu: &mu, at: &alive}, Meta: &jetstream.MsgMetadata{NumDelivered: delivery}}
		mu.Lock()
		alive = append(alive, time.Now())
		mu.Unlock()
		err := e.Handle(context.Background(), d) // no deadline: each publish waits for its ack 1 s (the JetStream timeout)
		mu.Lock()
		alive = append(alive, time.Now())
		mu.Unlock()
		handled = err == nil
		t.Logf("delivery %d: %v", delivery, err)
	}
	mu.Lock()
	for i := 1; i < len(alive); i++ {
		if gap := alive[i].Sub(alive[i-1]); gap >= e.cfg.AckWait {
			t.Errorf("the message went %v without InProgress (AckWait %v): it would have been redelivered meanwhile", gap.Round(time.Millisecond), e.cfg.AckWait)
		}
	}
	mu.Unlock()
	if !dropped.Load() {
		t.Fatal("no ack was dropped: the test did not inject its fault")
	}
	if !handled {
		t.Fatal("the work was never handled")
	}
	// LLM_TELEMETRY is a work queue: read it by sequence, not by a consumer.
	stream, err := js.Stream(ctx, natsx.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	var started []string
	for seq := uint64(1); seq <= stream.CachedInfo().State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var ev envelope.AttemptEvent
		if m.Subject != "llm.telemetry.attempt" || json.Unmarshal(m.Data, &ev) != nil {
			continue
		}
		if ev.Outcome == envelope.OutcomeStarted {
			started = append(started, ev.AttemptID)
		}
	}
	if len(started) != int(calls.Load()) || len(started) != 1 || started[0] != "k#1" {
		t.Fatalf("started events %v for %d vendor calls, want [k#1] for 1", started, calls.Load())
	}
}

// The answered check reads the stream's leader: a replica behind (a mirror
// answering LLM_REPLIES' direct gets, without the reply) must not make a
// redelivered answered request call the vendor. Before, the check used the
// direct get and about half of the redeliveries called the vendor again.
func TestAnsweredCheckAsksTheStreamLeader(t *testing.T) {
	_, js := testkit.JetStream(t)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	publish := func(subject, id string) {
		store, _ := natsx.ReplyPublishSubject(subject)
		m := &nats.Msg{Subject: store, Data: []byte(`{}`), Header: nats.Header{}}
		m.Header.Set(natsx.HeaderMsgID, id)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	testkit.RepliesBehind(t, ctx, js)
	w := work(time.Now())
	publish(w.Request.ReplySubject(), "k:reply")
	var calls atomic.Int32
	e := testExecutor(t, adapterFunc(func(ctx context.Context, r *provider.Request) (*provider.Response, error) {
		calls.Add(1)
		return answer(ctx, r)
	}))
	e.d.JS, e.pub = js, pipeline.Publisher{JS: js}
	data, _ := json.Marshal(w)
	const redeliveries = 20
	for range redeliveries {
		d := &pipeline.Delivery{Msg: redelivered{data: data}, Meta: &jetstream.MsgMetadata{NumDelivered: 2}}
		if err := e.Handle(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("vendor called %d times in %d redeliveries of an answered request, want 0", n, redeliveries)
	}
}

// keepAlive marks the message in progress every period until stopped, or
// until its context ends; it starts no goroutine while it waits.
func TestKeepAliveTicksUntilStopped(t *testing.T) {
	const every = 20 * time.Millisecond
	count := func(mu *sync.Mutex, at *[]time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		return len(*at)
	}
	for _, tt := range []struct {
		name   string
		finish func(stop func(), cancel context.CancelFunc)
	}{
		{"stopped", func(stop func(), _ context.CancelFunc) { stop() }},
		{"context ended", func(_ func(), cancel context.CancelFunc) { cancel() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var at []time.Time
			d := &pipeline.Delivery{Msg: keptAlive{mu: &mu, at: &at}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			before := runtime.NumGoroutine()
			stop := keepAlive(ctx, d, every)
			defer stop()
			if n := runtime.NumGoroutine(); n > before {
				t.Errorf("keepAlive started %d goroutines", n-before)
			}
			deadline := time.Now().Add(5 * time.Second)
			for count(&mu, &at) < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("%d InProgress in 5 s, want 3 (every %v)", count(&mu, &at), every)
				}
				time.Sleep(every / 2)
			}
			tt.finish(stop, cancel)
			time.Sleep(2 * every) // a tick already firing may still land
			n := count(&mu, &at)
			time.Sleep(5 * every)
			if later := count(&mu, &at); later != n {
				t.Fatalf("%d InProgress after it ended", later-n)
			}
		})
	}
}

// BenchmarkKeepAlive is what every vendor call and hand-off pays for its
// keep-alive when it ends before the first tick (the common case).
func BenchmarkKeepAlive(b *testing.B) {
	var mu sync.Mutex
	var at []time.Time
	d := &pipeline.Delivery{Msg: keptAlive{mu: &mu, at: &at}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		keepAlive(ctx, d, 10*time.Second)()
	}
}
