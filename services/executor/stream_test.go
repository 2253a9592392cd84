package executor

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/pii"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// streamFunc is a one-function fake streaming vendor: it sends pieces as
// deltas, then answers or fails with err.
type streamFunc struct {
	pieces []string
	err    error
	seen   *provider.Request
}

func (f *streamFunc) Complete(context.Context, *provider.Request) (*provider.Response, error) {
	panic("a streamed request must stream")
}

func (f *streamFunc) Stream(_ context.Context, req *provider.Request, _ provider.StreamOptions, onDelta func(provider.Delta) error) (*provider.Response, error) {
	f.seen = req
	text := ""
	for _, p := range f.pieces {
		if err := onDelta(provider.Delta{Content: p}); err != nil {
			return nil, err
		}
		text += p
	}
	if f.err != nil {
		return nil, f.err
	}
	return &provider.Response{Content: text, FinishReason: "stop", Usage: envelope.Usage{InputTokens: 3, OutputTokens: 2}, HTTPStatus: 200}, nil
}

// A streamed attempt publishes its deltas numbered on from the request's
// earlier deltas; a continuation sends the text so far as an assistant
// prefill and answers with the whole text; a failed one keeps what it
// published for the router.
func TestStreamedAttempt(t *testing.T) {
	tests := []struct {
		name        string
		seq         int
		prefix      string
		vendor      *streamFunc
		wantSeqs    []int
		wantContent string
		wantPartial string
		wantClass   string
	}{
		{name: "first attempt", vendor: &streamFunc{pieces: []string{"He", "llo"}}, wantSeqs: []int{0, 1}, wantContent: "Hello"},
		{name: "continuation", seq: 2, prefix: "Hel", vendor: &streamFunc{pieces: []string{"lo", "!"}}, wantSeqs: []int{2, 3}, wantContent: "Hello!"},
		// The prefill goes without its trailing space (Anthropic refuses
		// one); the continuation's repeat of it is not published again.
		{name: "continuation after a space", seq: 1, prefix: "Hello ", vendor: &streamFunc{pieces: []string{" world", "!"}}, wantSeqs: []int{1, 2}, wantContent: "Hello world!"},
		{name: "cut", vendor: &streamFunc{pieces: []string{"Hel"}, err: &provider.Error{Class: provider.ClassStreamCut, Retryable: true, Message: "cut"}},
			wantSeqs: []int{0}, wantPartial: "Hel", wantClass: string(provider.ClassStreamCut)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, _ := testkit.JetStream(t)
			e := testExecutor(t, tt.vendor)
			e.d.NC = nc
			w := work(time.Now())
			w.Request.Stream, w.StreamSeq, w.StreamText = true, tt.seq, tt.prefix
			ch := make(chan *nats.Msg, 16)
			sub, err := nc.ChanSubscribe(envelope.DeltaSubject("t", "k"), ch)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			res, _ := e.call(context.Background(), w, w.Target(), nil)
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			if res.ErrorClass != tt.wantClass || res.Content != tt.wantContent || res.Partial != tt.wantPartial || res.Deltas != len(tt.wantSeqs) {
				t.Fatalf("result %+v", res)
			}
			last := tt.vendor.seen.Messages[len(tt.vendor.seen.Messages)-1]
			if (tt.prefix != "") != (last.Role == "assistant" && last.Content == strings.TrimRight(tt.prefix, " ")) {
				t.Fatalf("prefill %q, last message sent %+v", tt.prefix, last)
			}
			for _, want := range tt.wantSeqs {
				select {
				case m := <-ch:
					var ev envelope.DeltaEvent
					if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Seq != want || ev.Type != envelope.DeltaContent || ev.Attempt != 1 || ev.Model != "m" {
						t.Fatalf("delta %s (%v), want seq %d", m.Data, err, want)
					}
				case <-time.After(2 * time.Second):
					t.Fatalf("no delta %d", want)
				}
			}
		})
	}
}

// Deltas of a redacted request are restored even when a placeholder is
// split over deltas: what is published adds up to the restored answer.
func TestRestorer(t *testing.T) {
	r := pii.NewRedactor()
	tok := r.Redact("write to ann@example.com") // "write to [EMAIL_1]"
	if !strings.Contains(tok, "[EMAIL_1]") {
		t.Fatalf("redacted %q", tok)
	}
	tests := []struct {
		name   string
		pieces []string
		want   []string
	}{
		{"whole placeholder", []string{"mail [EMAIL_1] now"}, []string{"mail ann@example.com now"}},
		{"split placeholder", []string{"mail [EMA", "IL_", "1] now"}, []string{"mail ", "", "ann@example.com now"}},
		{"a bracket that is no placeholder", []string{"a [b", "c] d"}, []string{"a ", "[bc] d"}},
		{"unclosed at the end", []string{"x [EMAIL"}, []string{"x ", "[EMAIL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := &restorer{r: r}
			var got []string
			for _, p := range tt.pieces {
				got = append(got, x.take(p))
			}
			if rest := x.flush(); rest != "" {
				got = append(got, rest)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if strings.Join(got, "") != r.Restore(strings.Join(tt.pieces, "")) {
				t.Fatalf("deltas %q do not add up to the restored answer", got)
			}
		})
	}
}
