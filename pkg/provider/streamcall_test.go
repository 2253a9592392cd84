package provider

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// lineDecoder is the smallest decoder: data "end" ends the stream, any
// other data is content.
type lineDecoder struct{ sb strings.Builder }

func (d *lineDecoder) Event(ev SSEEvent) (string, bool, error) {
	if string(ev.Data) == "end" {
		return "", true, nil
	}
	d.sb.Write(ev.Data)
	return string(ev.Data), false, nil
}

func (d *lineDecoder) Finish(ended bool) (*Response, error) {
	if !ended {
		return nil, StreamCut("end")
	}
	return &Response{Content: d.sb.String(), FinishReason: "stop"}, nil
}

// step is one thing a scripted server does: write an event or comment, or
// pause.
type step struct {
	write string
	pause time.Duration
}

func scripted(t *testing.T, steps []step, holdOpen time.Duration) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for _, s := range steps {
			if s.pause > 0 {
				select {
				case <-time.After(s.pause):
				case <-r.Context().Done():
					return
				}
				continue
			}
			fmt.Fprint(w, s.write)
			f.Flush()
		}
		select {
		case <-time.After(holdOpen):
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(ts.Close)
	return ts
}

// TestRunStreamWatchdog: pings and comments keep an idle limit at bay but
// never count as the first token; a vendor holding the body open after
// its end marker does not hold the call.
func TestRunStreamWatchdog(t *testing.T) {
	ping := step{write: ": ping\n\n"}
	wait := func(d time.Duration) step { return step{pause: d} }
	data := func(s string) step { return step{write: "data: " + s + "\n\n"} }
	var pings []step
	for i := 0; i < 8; i++ {
		pings = append(pings, ping, wait(50*time.Millisecond))
	}
	cases := []struct {
		name     string
		steps    []step
		holdOpen time.Duration
		opt      StreamOptions
		class    Class // "": success
		maxTook  time.Duration
		slow     time.Duration // each onDelta takes this long
	}{
		{"pings before content are no first token", pings, 0,
			StreamOptions{FirstTokenTimeout: 150 * time.Millisecond, IdleTimeout: time.Second}, ClassStreamStalled, time.Second, 0},
		{"pings keep the idle limit at bay", append(append([]step{data("a")}, pings...), data("b"), data("end")), 0,
			StreamOptions{FirstTokenTimeout: time.Second, IdleTimeout: 150 * time.Millisecond}, "", 2 * time.Second, 0},
		{"silence after content is idle", []step{data("a"), wait(2 * time.Second), data("end")}, 0,
			StreamOptions{IdleTimeout: 150 * time.Millisecond}, ClassStreamStalled, time.Second, 0},
		{"no limits, slow but steady", []step{data("a"), wait(100 * time.Millisecond), data("b"), data("end")}, 0,
			StreamOptions{}, "", 2 * time.Second, 0},
		{"body held open after the end marker", []step{data("a"), data("end")}, 10 * time.Second,
			StreamOptions{IdleTimeout: 5 * time.Second}, "", time.Second, 0},
		{"body ends without the end marker", []step{data("a")}, 0, StreamOptions{}, ClassStreamCut, time.Second, 0},
		{"a slow caller is not a silent vendor", []step{data("a"), wait(50 * time.Millisecond), data("b"), wait(50 * time.Millisecond), data("end")}, 0,
			StreamOptions{IdleTimeout: 100 * time.Millisecond}, "", time.Second, 200 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := scripted(t, tc.steps, tc.holdOpen)
			start := time.Now()
			resp, err := RunStream(context.Background(), StreamCall{URL: ts.URL, Options: tc.opt, Client: NewHTTPClient(1),
				StatusError: func(status int, h http.Header, body []byte) *Error { return StatusError(status, h, string(body), "") }},
				&lineDecoder{}, func(Delta) error { time.Sleep(tc.slow); return nil })
			took := time.Since(start)
			if tc.class == "" && err != nil {
				t.Fatalf("err %v", err)
			}
			if tc.class != "" && (AsError(err) == nil || AsError(err).Class != tc.class || resp != nil) {
				t.Fatalf("got %v %+v, want %s", err, resp, tc.class)
			}
			if took > tc.maxTook {
				t.Fatalf("took %v, want under %v", took, tc.maxTook)
			}
		})
	}
}
