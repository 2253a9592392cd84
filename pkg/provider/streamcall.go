package provider

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync"
	"time"
)

// StreamDecoder turns one vendor's events into content; the adapters
// implement it per wire protocol. RunStream drives it.
type StreamDecoder interface {
	// Event handles one event: the content it carries ("" for none), whether
	// it is the stream's end marker, or a classified error (a malformed
	// chunk, an error event, a content-policy refusal).
	Event(ev SSEEvent) (content string, end bool, err error)
	// Finish builds the whole answer once the body is over; ended says the
	// end marker was seen. A stream without its end marker is complete only
	// if it carried a final finish reason and usage; otherwise Finish
	// returns a stream_cut error.
	Finish(ended bool) (*Response, error)
}

// StreamCall is one streaming HTTP call.
type StreamCall struct {
	Client  *http.Client // DefaultHTTPClient when nil
	URL     string
	Header  http.Header
	Body    []byte
	Options StreamOptions
	// StatusError classifies a non-2xx reply from its (bounded) body.
	StatusError func(status int, h http.Header, body []byte) *Error
}

// Causes of a watchdog cancellation.
var (
	errFirstTokenStall = errors.New("no content within the first-token limit")
	errIdleStall       = errors.New("no data within the idle limit")
	errDrain           = errors.New("body still open after the end marker")
)

// maxDrainWait bounds the wait for the body's end after the end marker.
const maxDrainWait = 250 * time.Millisecond

// maxDrainBytes bounds what is read after an end marker so the connection
// can go back to the pool; a vendor sending more than that loses it.
const maxDrainBytes = 64 << 10

// RunStream sends c with Accept: text/event-stream, hands every event to
// dec and every non-empty content to onDelta, and enforces the first-token
// and idle limits by cancelling the request (stream_stalled). Transport
// failures after the headers are stream_cut; a body that overflows
// MaxResponseBytes or a line longer than MaxSSELine is bad_response. An
// error from onDelta is returned as it is.
func RunStream(ctx context.Context, c StreamCall, dec StreamDecoder, onDelta func(Delta) error) (*Response, error) {
	client := c.Client
	if client == nil {
		client = DefaultHTTPClient
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	wd := newWatchdog(c.Options, cancel)
	defer wd.stop()

	req, err := http.NewRequestWithContext(sctx, http.MethodPost, c.URL, bytes.NewReader(c.Body))
	if err != nil {
		return nil, &Error{Class: ClassInvalidRequest, Message: "building request: " + err.Error()}
	}
	for k, vs := range c.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	wd.start()
	resp, err := client.Do(req)
	if err != nil {
		return nil, streamFailure(ctx, sctx, err, false)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
		if err != nil {
			return nil, streamFailure(ctx, sctx, err, false)
		}
		return nil, c.StatusError(resp.StatusCode, resp.Header, data)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return nil, BadResponse(resp.StatusCode, fmt.Sprintf("expected an event stream, got %q: %s", mt, Snippet(data)), "")
	}
	body := &activityReader{r: io.LimitReader(resp.Body, MaxResponseBytes+1), wd: wd}
	ended, readErr, err := decodeEvents(NewSSEReader(body, MaxSSELine), dec, func(content string) error {
		// The limits time the vendor, not the caller: a slow onDelta
		// (a full downstream) is not the vendor's silence.
		wd.content()
		wd.hold()
		defer wd.activity()
		return onDelta(Delta{Content: content})
	})
	switch {
	case errors.Is(readErr, ErrSSELineTooLong):
		return nil, lineTooLong(resp.StatusCode)
	case readErr != nil:
		return nil, streamFailure(ctx, sctx, readErr, true)
	case err != nil:
		return nil, err
	}
	if body.n > MaxResponseBytes {
		return nil, BadResponse(resp.StatusCode, fmt.Sprintf("event stream larger than %d bytes", MaxResponseBytes), "")
	}
	if err := context.Cause(sctx); err != nil && ctx.Err() == nil && !ended {
		// The watchdog fired as the body ended: still a stall.
		return nil, streamFailure(ctx, sctx, err, true)
	}
	out, err := dec.Finish(ended)
	if err != nil {
		return nil, err
	}
	if ended {
		// What follows the end marker (normally nothing) is read so the
		// connection goes back to the pool, for a bounded time: a vendor
		// that keeps the body open after its end marker loses the
		// connection instead of holding the call.
		wd.stop()
		t := time.AfterFunc(maxDrainWait, func() { cancel(errDrain) })
		_, _ = io.CopyN(io.Discard, resp.Body, maxDrainBytes)
		t.Stop()
	}
	out.HTTPStatus = resp.StatusCode
	return out, nil
}

// streamFailure classifies a transport failure of a streaming call: the
// watchdog's cancellation is stream_stalled, the caller's context a
// timeout (or connection, when cancelled), and a failure once the body
// had started stream_cut.
func streamFailure(ctx, sctx context.Context, err error, inBody bool) *Error {
	if ctx.Err() == nil {
		switch cause := context.Cause(sctx); {
		case errors.Is(cause, errFirstTokenStall), errors.Is(cause, errIdleStall):
			return &Error{Class: ClassStreamStalled, Retryable: true, Message: cause.Error()}
		}
		if inBody {
			return &Error{Class: ClassStreamCut, Retryable: true, Message: "stream broken: " + err.Error()}
		}
	}
	return transportError(ctx, err)
}

// StreamCut is the error for a stream whose body ended without its end
// marker and without a final finish reason (or its usage).
func StreamCut(missing string) *Error {
	return &Error{Class: ClassStreamCut, HTTPStatus: http.StatusOK, Retryable: true,
		Message: "stream ended before its end marker: no " + missing}
}

// watchdog cancels a streaming call that stays silent too long: no content
// within FirstTokenTimeout of sending, or no bytes within IdleTimeout of
// the previous ones once the first chunk arrived.
type watchdog struct {
	opt    StreamOptions
	cancel context.CancelCauseFunc

	mu         sync.Mutex
	firstToken *time.Timer
	idle       *time.Timer
	gotContent bool
	stopped    bool
}

func newWatchdog(opt StreamOptions, cancel context.CancelCauseFunc) *watchdog {
	return &watchdog{opt: opt, cancel: cancel}
}

func (w *watchdog) start() {
	if w.opt.FirstTokenTimeout > 0 {
		w.mu.Lock()
		w.firstToken = time.AfterFunc(w.opt.FirstTokenTimeout, func() { w.cancel(errFirstTokenStall) })
		w.mu.Unlock()
	}
}

// activity: bytes arrived (a chunk, a ping, a comment).
func (w *watchdog) activity() {
	if w.opt.IdleTimeout <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if w.idle == nil {
		w.idle = time.AfterFunc(w.opt.IdleTimeout, func() { w.cancel(errIdleStall) })
		return
	}
	w.idle.Reset(w.opt.IdleTimeout)
}

// content: the first content delta ends the first-token wait.
func (w *watchdog) content() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.gotContent && w.firstToken != nil {
		w.firstToken.Stop()
	}
	w.gotContent = true
}

// hold stops the idle clock until the next activity.
func (w *watchdog) hold() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.idle != nil {
		w.idle.Stop()
	}
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.firstToken != nil {
		w.firstToken.Stop()
	}
	if w.idle != nil {
		w.idle.Stop()
	}
}

// activityReader tells the watchdog about every read that brought bytes
// and counts them.
type activityReader struct {
	r  io.Reader
	wd *watchdog
	n  int64
}

func (a *activityReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.n += int64(n)
		a.wd.activity()
	}
	return n, err
}

// ScrubStreamError scrubs secret out of a classified streaming error and
// returns any other error (the onDelta callback's) as it is.
func ScrubStreamError(err error, secret string) error {
	var ve *Error
	if !errors.As(err, &ve) {
		return err
	}
	ve.Message = CleanMessage(ve.Message, secret)
	return ve
}

// decodeEvents hands every event of sse to dec and its content to emit,
// until the end marker (ended) or the end of the body. readErr is a
// failure to read the body (ErrSSELineTooLong included); err is dec's or
// emit's.
func decodeEvents(sse *SSEReader, dec StreamDecoder, emit func(string) error) (ended bool, readErr, err error) {
	for !ended {
		ev, rerr := sse.Next()
		if rerr == io.EOF {
			return false, nil, nil
		}
		if rerr != nil {
			return false, rerr, nil
		}
		content, end, derr := dec.Event(ev)
		if derr != nil {
			return false, nil, derr
		}
		if content != "" {
			if err := emit(content); err != nil {
				return false, nil, err
			}
		}
		ended = end
	}
	return true, nil, nil
}

func lineTooLong(status int) *Error {
	return BadResponse(status, fmt.Sprintf("event stream line longer than %d bytes", MaxSSELine), "")
}

// DecodeStream decodes a whole event-stream body with dec, as RunStream
// does once the headers are in, without the network: for decoder tests
// and fuzzing. A failure to read body is stream_cut.
func DecodeStream(body io.Reader, dec StreamDecoder, onDelta func(Delta) error) (*Response, error) {
	ended, readErr, err := decodeEvents(NewSSEReader(body, MaxSSELine), dec, func(content string) error {
		return onDelta(Delta{Content: content})
	})
	switch {
	case errors.Is(readErr, ErrSSELineTooLong):
		return nil, lineTooLong(http.StatusOK)
	case readErr != nil:
		return nil, &Error{Class: ClassStreamCut, Retryable: true, Message: "stream broken: " + readErr.Error()}
	case err != nil:
		return nil, err
	}
	resp, err := dec.Finish(ended)
	if err != nil {
		return nil, err
	}
	resp.HTTPStatus = http.StatusOK
	return resp, nil
}
