package benchfloor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// The HTTP front's tenant, and how long it waits for a reply.
const (
	httpTenant  = "http"
	httpTimeout = 30 * time.Second
	// maxHTTPBody is the edge's default SWITCHYARD_EDGE_MAX_BODY_BYTES.
	maxHTTPBody = 256 << 10
)

// httpFront is the least an HTTP door in front of the NATS contract does
// per request: an OpenAI chat completion decoded into a request envelope,
// published to llm.requests as a client does (JetStream, Nats-Msg-Id =
// id), its reply awaited on llm.replies.http.<id> and written back in
// OpenAI's shape. No keys, limits, streaming or model mapping: that is what
// Switchyard's edge adds, and what a benchmark sets against this.
type httpFront struct {
	js      jetstream.JetStream
	srv     *http.Server
	ln      net.Listener
	sub     *nats.Subscription
	ids     string // this process's id prefix
	seq     atomic.Uint64
	mu      sync.Mutex
	waiting map[string]chan *nats.Msg // reply subject -> its waiter
}

// startHTTP listens on addr and subscribes to the front's replies before
// the first request can be published.
func (f *Floor) startHTTP(addr string) error {
	h := &httpFront{js: f.js, ids: strconv.FormatInt(time.Now().UnixNano(), 36) + "-", waiting: map[string]chan *nats.Msg{}}
	var err error
	if h.sub, err = f.nc.Subscribe(envelope.DefaultReplySubject(httpTenant, "*"), h.deliver); err != nil {
		return err
	}
	if h.ln, err = net.Listen("tcp", addr); err != nil {
		_ = h.sub.Unsubscribe()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", h.complete)
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.srv.Serve(h.ln) }()
	f.http = h
	return nil
}

// HTTPAddr is where the HTTP front listens ("" without one).
func (f *Floor) HTTPAddr() string {
	if f.http == nil {
		return ""
	}
	return f.http.ln.Addr().String()
}

func (h *httpFront) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.srv.Shutdown(ctx)
	_ = h.sub.Unsubscribe()
}

// deliver hands a reply to the request waiting for it; one nobody waits
// for (its request timed out) is dropped, as a client would.
func (h *httpFront) deliver(m *nats.Msg) {
	h.mu.Lock()
	ch := h.waiting[m.Subject]
	delete(h.waiting, m.Subject)
	h.mu.Unlock()
	if ch != nil {
		ch <- m
	}
}

// chatRequest is the part of OpenAI's chat completion request the front
// reads (the model is not mapped: see complete).
type chatRequest struct {
	Messages    []envelope.Message `json:"messages"`
	MaxTokens   int                `json:"max_tokens,omitempty"`
	Temperature *float64           `json:"temperature,omitempty"`
}

type chatChoice struct {
	Index        int              `json:"index"`
	Message      envelope.Message `json:"message"`
	FinishReason string           `json:"finish_reason"`
}

type chatUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type chatResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   chatUsage    `json:"usage"`
}

type chatError struct {
	Error struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"error"`
}

func (h *httpFront) complete(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHTTPBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, envelope.CodeInvalidRequest, "body: "+err.Error())
		return
	}
	var in chatRequest
	if err := envelope.UnmarshalInternal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, envelope.CodeInvalidRequest, "body: "+err.Error())
		return
	}
	id := h.ids + strconv.FormatUint(h.seq.Add(1), 10)
	// The model is not mapped to a route or a vendor/model pair (the edge's
	// work): the floor calls its one model whatever is asked.
	req := envelope.Request{ID: id, Tenant: httpTenant, Messages: in.Messages, MaxTokens: in.MaxTokens, Temperature: in.Temperature}
	data, err := envelope.MarshalInternal(&req)
	if err != nil {
		writeError(w, http.StatusInternalServerError, envelope.CodeInternal, err.Error())
		return
	}
	subject := envelope.DefaultReplySubject(httpTenant, id)
	ch := make(chan *nats.Msg, 1)
	h.mu.Lock()
	h.waiting[subject] = ch
	h.mu.Unlock()
	forget := func() { h.mu.Lock(); delete(h.waiting, subject); h.mu.Unlock() }
	ctx, cancel := context.WithTimeout(r.Context(), httpTimeout)
	defer cancel()
	msg := &nats.Msg{Subject: natsx.SubjectRequests, Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		forget()
		writeError(w, http.StatusServiceUnavailable, envelope.CodeInternal, "publish: "+err.Error())
		return
	}
	var m *nats.Msg
	select {
	case m = <-ch:
	case <-ctx.Done():
		forget()
		writeError(w, http.StatusGatewayTimeout, envelope.CodeDeadlineExceeded, "no reply: "+ctx.Err().Error())
		return
	}
	var rep envelope.Reply
	if err := envelope.UnmarshalInternal(m.Data, &rep); err != nil {
		writeError(w, http.StatusBadGateway, envelope.CodeInternal, "reply: "+err.Error())
		return
	}
	if rep.Status != envelope.StatusOK || rep.Error != nil {
		status, code, message := http.StatusBadGateway, envelope.CodeInternal, "error reply"
		if rep.Error != nil {
			code, message = rep.Error.Code, rep.Error.Message
			if code == envelope.CodeInvalidRequest {
				status = http.StatusBadRequest
			}
		}
		writeError(w, status, code, message)
		return
	}
	out := chatResponse{ID: "chatcmpl-" + id, Object: "chat.completion", Created: time.Now().Unix(), Model: rep.Model,
		Choices: []chatChoice{{Message: envelope.Message{Role: "assistant", Content: rep.Content}, FinishReason: rep.FinishReason}},
		Usage:   chatUsage{PromptTokens: rep.Usage.InputTokens, CompletionTokens: rep.Usage.OutputTokens, TotalTokens: rep.Usage.InputTokens + rep.Usage.OutputTokens}}
	writeJSON(w, http.StatusOK, &out)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	var e chatError
	e.Error.Code, e.Error.Message = code, message
	writeJSON(w, status, &e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := envelope.MarshalInternal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(fmt.Sprintf(`{"error":{"message":%q,"code":%q}}`, err.Error(), envelope.CodeInternal))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// errNoHTTPWithoutStore: the front's replies come on llm.replies.http.<id>,
// which the contract stores.
var errNoHTTPWithoutStore = errors.New("http address: needs stored replies (the front's replies are on llm.replies.http.<id>, which the contract stores)")
