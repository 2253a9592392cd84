package natsx

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pipePair is a bufferedConn over one end of a net.Pipe and the raw other
// end, which plays the server.
func pipePair(t *testing.T) (*bufferedConn, net.Conn) {
	t.Helper()
	client, server := net.Pipe()
	c := newBufferedConn(client)
	c.grace = 500 * time.Millisecond // the tests whose server never reads close at cleanup
	t.Cleanup(func() { _ = c.Close(); _ = server.Close() })
	return c, server
}

// Bytes arrive whole and in order both ways, written in pieces of many
// sizes.
func TestBufferedConnKeepsOrder(t *testing.T) {
	tests := []struct {
		name string
		ends func(c *bufferedConn, server net.Conn) (io.Writer, io.Reader)
	}{
		{"to the server", func(c *bufferedConn, server net.Conn) (io.Writer, io.Reader) { return c, server }},
		{"from the server", func(c *bufferedConn, server net.Conn) (io.Writer, io.Reader) { return server, c }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, r := tc.ends(pipePair(t))
			var want bytes.Buffer
			for i := range 20000 {
				want.Write(bytes.Repeat([]byte{byte(i)}, 1+i%97))
			}
			go func() {
				b := want.Bytes()
				for i := 0; len(b) > 0; i++ {
					n := min(1+i%89, len(b))
					if _, err := w.Write(b[:n]); err != nil {
						t.Errorf("write %d: %v", i, err)
						return
					}
					b = b[n:]
				}
			}()
			got := make([]byte, want.Len())
			if _, err := io.ReadFull(r, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatal("the bytes read differ from the bytes written")
			}
		})
	}
}

// The server's writes do not wait for the reader, up to the bound, as a
// socket's do not: a reader busy elsewhere does not stall the server.
func TestBufferedConnServerWritesDoNotWaitForTheReader(t *testing.T) {
	c, server := pipePair(t)
	writeReturns(t, server, maxQueued/2)
	// Past the bound the server's write waits for the reader.
	if err := server.SetWriteDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write(make([]byte, 2*maxQueued)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("server write past the bound: got %v, want %v", err, os.ErrDeadlineExceeded)
	}
	if n, err := io.ReadFull(c, make([]byte, maxQueued/2)); err != nil {
		t.Fatalf("read %d of what was queued: %v", n, err)
	}
}

func TestBufferedConnReadDeadline(t *testing.T) {
	c, _ := pipePair(t) // the server writes nothing
	if err := c.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: got %v, want %v", err, os.ErrDeadlineExceeded)
	}
	// A deadline moved later while a read waits is the one that counts.
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	go func() {
		time.Sleep(10 * time.Millisecond)
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	}()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the moved deadline: got %v, want %v", err, os.ErrDeadlineExceeded)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Fatalf("read gave up after %v, before the moved deadline", waited)
	}
}

func TestBufferedConnWriteDoesNotWaitForTheReader(t *testing.T) {
	c, _ := pipePair(t) // nobody reads the server's end
	writeReturns(t, c, 64<<10)
}

// writeReturns fails the test unless a write of n bytes to w returns
// without anyone reading the other end.
func writeReturns(t *testing.T, w io.Writer, n int) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(make([]byte, n))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("a write of %d bytes, under the bound, waited for the reader", n)
	}
}

func TestBufferedConnBoundsWhatItHolds(t *testing.T) {
	c, _ := pipePair(t) // nobody reads: the first buffer stays in the pipe's Write, the next fills up
	if err := c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var err error
	for written := 0; written < 4*maxQueued && err == nil; written += 64 << 10 {
		_, err = c.Write(make([]byte, 64<<10))
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writes past the bound with a deadline: got %v, want %v", err, os.ErrDeadlineExceeded)
	}
	c.out.mu.Lock()
	held := c.out.buf.Len()
	c.out.mu.Unlock()
	if held > maxQueued+64<<10 {
		t.Fatalf("holds %d bytes, bound %d", held, maxQueued)
	}
}

func TestBufferedConnCloseDeliversWhatWasWritten(t *testing.T) {
	c, server := pipePair(t)
	want := bytes.Repeat([]byte("PUB x 1\r\nA\r\n"), 1000)
	if _, err := c.Write(want); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	got, err := io.ReadAll(server) // ends at EOF: Close closed the pipe after the bytes
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes before EOF, want %d", len(got), len(want))
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: got %v, want %v", err, net.ErrClosed)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: got %v, want %v", err, net.ErrClosed)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: got %v, want %v", err, net.ErrClosed)
	}
}

func TestBufferedConnCloseDoesNotWaitForeverForTheReader(t *testing.T) {
	c, _ := pipePair(t) // nobody reads
	c.grace = 50 * time.Millisecond
	if _, err := c.Write([]byte("stuck")); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a reader that never reads")
	}
}

func TestBufferedConnReportsAClosedPeer(t *testing.T) {
	c, server := pipePair(t)
	_ = server.Close()
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		_, err = c.Write([]byte("x")) // the first may be queued before the sender sees the close
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write to a closed peer: got %v, want %v", err, io.ErrClosedPipe)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from a closed peer: no error")
	}
}
