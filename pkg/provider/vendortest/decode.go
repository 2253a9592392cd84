package vendortest

import (
	"errors"
	"strings"
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// StreamFixture is a recorded event-stream body and what decoding it must
// give: the content, finish reason and usage, or an error class.
type StreamFixture struct {
	Name            string
	Body            string
	Content, Finish string
	In, Out         int
	Class           provider.Class // "": success
}

// RunStreamFixtures decodes each fixture with a fresh decoder.
func RunStreamFixtures(t *testing.T, fixtures []StreamFixture, newDecoder func() provider.StreamDecoder) {
	for _, tc := range fixtures {
		t.Run(tc.Name, func(t *testing.T) {
			var deltas []string
			resp, err := provider.DecodeStream(strings.NewReader(tc.Body), newDecoder(), func(d provider.Delta) error {
				deltas = append(deltas, d.Content)
				return nil
			})
			if tc.Class != "" {
				var ve *provider.Error
				if !errors.As(err, &ve) || ve.Class != tc.Class || ve.Message == "" {
					t.Fatalf("got %v (resp %+v), want %s", err, resp, tc.Class)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Content != tc.Content || strings.Join(deltas, "") != tc.Content || resp.FinishReason != tc.Finish ||
				resp.Usage.InputTokens != tc.In || resp.Usage.OutputTokens != tc.Out {
				t.Fatalf("resp %+v deltas %q, want %q %s in %d out %d", resp, deltas, tc.Content, tc.Finish, tc.In, tc.Out)
			}
		})
	}
}

// FuzzStreamDecoder holds a decoder to the Streamer contract on any body:
// a Response whose content is exactly its deltas, or a classified error of
// a known class; never a panic.
func FuzzStreamDecoder(f *testing.F, fixtures []StreamFixture, newDecoder func() provider.StreamDecoder) {
	for _, tc := range fixtures {
		if len(tc.Body) < 64<<10 {
			f.Add([]byte(tc.Body))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var sb strings.Builder
		resp, err := provider.DecodeStream(strings.NewReader(string(body)), newDecoder(), func(d provider.Delta) error {
			if d.Content == "" {
				t.Fatal("empty delta")
			}
			sb.WriteString(d.Content)
			return nil
		})
		if err != nil {
			var ve *provider.Error
			if resp != nil || !errors.As(err, &ve) {
				t.Fatalf("resp %v err %T %v", resp, err, err)
			}
			if _, known := ve.Class.Info(); !known {
				t.Fatalf("unknown class %q", ve.Class)
			}
			return
		}
		if resp.Content != sb.String() {
			t.Fatalf("content %q, deltas %q", resp.Content, sb.String())
		}
	})
}

// Decodes is a fixture that decodes to content with finish reason and usage.
func Decodes(name, body, content, finish string, in, out int) StreamFixture {
	return StreamFixture{Name: name, Body: body, Content: content, Finish: finish, In: in, Out: out}
}

// Fails is a fixture that fails with class.
func Fails(name, body string, class provider.Class) StreamFixture {
	return StreamFixture{Name: name, Body: body, Class: class}
}
