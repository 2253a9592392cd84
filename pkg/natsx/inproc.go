package natsx

import (
	"bytes"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// maxQueued bounds what a BufferedInProcess connection holds in each
// direction: past it the writer waits, as a full socket buffer makes it.
const maxQueued = 4 << 20

// closeGrace bounds how long Close waits for the bytes already written to
// reach the server before it cuts the connection.
const closeGrace = 2 * time.Second

// chunk is the most one hand-off to or from the pipe carries.
const chunk = 64 << 10

// BufferedInProcess connects to a server in the same process (the one
// `switchyard up` embeds) without a socket, buffered in both directions as
// a socket is.
//
// nats.InProcessServer alone is slower than loopback TCP: the server hands
// out one end of a net.Pipe, whose Write returns only once the other side
// has read everything. nats.go's flusher writes while holding the
// connection's lock, so every publish, ack and the read loop waited for
// the server's read loop; and the server's writes waited for nats.go's read
// loop to finish with what it read before. Here each direction has a
// buffer and a goroutine that moves it across the pipe, so neither side
// waits for the other's goroutine to be scheduled.
func BufferedInProcess(server nats.InProcessConnProvider) nats.Option {
	return nats.InProcessServer(bufferedProvider{server})
}

type bufferedProvider struct{ server nats.InProcessConnProvider }

func (p bufferedProvider) InProcessConn() (net.Conn, error) {
	pipe, err := p.server.InProcessConn()
	if err != nil {
		return nil, err
	}
	return newBufferedConn(pipe), nil
}

// bufferedConn is one end of a pipe, with what is written queued for the
// server (out, moved by send) and what the server wrote queued for the
// reader (in, moved by receive).
type bufferedConn struct {
	net.Conn // the pipe: addresses; send and receive alone read and write it
	out, in  byteQueue
	sent     chan struct{} // send returned: everything queued was written, or the pipe failed
	grace    time.Duration // closeGrace, shorter in tests
	closed   atomic.Bool
}

func newBufferedConn(pipe net.Conn) *bufferedConn {
	c := &bufferedConn{Conn: pipe, sent: make(chan struct{}), grace: closeGrace}
	c.out.init()
	c.in.init()
	go c.send()
	go c.receive()
	return c
}

func (c *bufferedConn) Write(p []byte) (int, error) {
	if err := c.out.put(p, true); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.in.take(p, true) }

// send moves what was written to the pipe until Close has been called and
// everything is written, or the pipe fails.
func (c *bufferedConn) send() {
	defer close(c.sent)
	buf := make([]byte, chunk)
	for {
		if err := c.out.await(); err != nil {
			return // closed and drained
		}
		// Let the goroutines that are ready run first, and send what they
		// add with this: a socket's reader wakes only when the scheduler
		// polls the network, and that batching is what a saturated `up`
		// lives on (without the yield it was slower than loopback TCP).
		runtime.Gosched()
		n, err := c.out.take(buf, false)
		if err != nil {
			return
		}
		if _, err := c.Conn.Write(buf[:n]); err != nil {
			c.out.fail(err)
			return
		}
	}
}

// receive moves what the server writes to the reader's queue until the
// pipe ends.
func (c *bufferedConn) receive() {
	buf := make([]byte, chunk)
	for {
		n, err := c.Conn.Read(buf)
		if n > 0 {
			if c.in.put(buf[:n], false) != nil {
				return // closed
			}
		}
		if err != nil {
			c.in.finish(err) // the reader gets what is queued, then err
			return
		}
	}
}

// Close lets the queued bytes reach the server (as closing a socket does)
// for up to closeGrace, then closes the pipe. Reads fail at once.
func (c *bufferedConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return net.ErrClosed
	}
	c.out.finish(net.ErrClosed)
	c.in.fail(net.ErrClosed)
	select {
	case <-c.sent:
	case <-time.After(c.grace):
	}
	return c.Conn.Close()
}

func (c *bufferedConn) SetWriteDeadline(t time.Time) error { c.out.setDeadline(t); return nil }
func (c *bufferedConn) SetReadDeadline(t time.Time) error  { c.in.setDeadline(t); return nil }
func (c *bufferedConn) SetDeadline(t time.Time) error {
	c.out.setDeadline(t)
	c.in.setDeadline(t)
	return nil
}

// byteQueue hands bytes from one goroutine to another: put waits only when
// maxQueued bytes are queued, take waits only when none are. Either may
// honour the deadline (the conn's write deadline for its out queue, its
// read deadline for its in queue).
type byteQueue struct {
	mu       sync.Mutex
	changed  sync.Cond // bytes put or taken, the queue ended, or the deadline moved or passed
	buf      bytes.Buffer
	err      error // set: put fails with it; take fails with it once buf is empty (or at once if dropped)
	deadline time.Time
	// timed counts the waits that honour the deadline: only they need a
	// wake when it moves (nats.go moves the write deadline twice per flush,
	// and the sending goroutine waits on the same condition).
	timed int
}

func (q *byteQueue) init() { q.changed.L = &q.mu }

func (q *byteQueue) put(p []byte, useDeadline bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.wait(useDeadline, forRoom); err != nil {
		return err
	}
	if q.buf.Len() == 0 {
		q.changed.Broadcast() // a taker waits for bytes
	}
	q.buf.Write(p)
	return nil
}

func (q *byteQueue) take(p []byte, useDeadline bool) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.wait(useDeadline, forBytes); err != nil && q.buf.Len() == 0 {
		return 0, err
	}
	full := q.buf.Len() >= maxQueued
	n, _ := q.buf.Read(p)
	if full && q.buf.Len() < maxQueued {
		q.changed.Broadcast() // a putter waits for room
	}
	return n, nil
}

// await waits until bytes are queued (nil) or the queue has ended and is
// empty (its error).
func (q *byteQueue) await() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.wait(false, forBytes); err != nil && q.buf.Len() == 0 {
		return err
	}
	return nil
}

type waitFor bool

const (
	forRoom  waitFor = false // fewer than maxQueued bytes queued
	forBytes waitFor = true  // some bytes queued
)

// wait returns nil once what it waits for holds, q.err once the queue has
// ended, or os.ErrDeadlineExceeded once the deadline (if used) has passed.
// It is called with mu held.
func (q *byteQueue) wait(useDeadline bool, what waitFor) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		switch {
		case q.err != nil:
			return q.err
		case useDeadline && !q.deadline.IsZero() && !time.Now().Before(q.deadline):
			return os.ErrDeadlineExceeded
		case what == forBytes && q.buf.Len() > 0, what == forRoom && q.buf.Len() < maxQueued:
			return nil
		}
		if useDeadline && !q.deadline.IsZero() { // (re)armed: the deadline may have moved
			if timer == nil {
				timer = time.AfterFunc(time.Until(q.deadline), q.wake)
			} else {
				timer.Reset(time.Until(q.deadline))
			}
		}
		if useDeadline {
			q.timed++
		}
		q.changed.Wait()
		if useDeadline {
			q.timed--
		}
	}
}

func (q *byteQueue) wake() {
	q.mu.Lock()
	q.changed.Broadcast()
	q.mu.Unlock()
}

// finish ends the queue after what it holds: puts fail with err, takes
// return the bytes still queued and then err.
func (q *byteQueue) finish(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = err
	}
	q.changed.Broadcast()
}

// fail ends the queue and drops what it holds.
func (q *byteQueue) fail(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = err
	}
	q.buf.Reset()
	q.changed.Broadcast()
}

func (q *byteQueue) setDeadline(t time.Time) {
	q.mu.Lock()
	q.deadline = t
	if q.timed > 0 {
		q.changed.Broadcast()
	}
	q.mu.Unlock()
}
