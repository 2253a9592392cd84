package provider

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readAll(t testing.TB, r *SSEReader) ([]SSEEvent, error) {
	var out []SSEEvent
	for i := 0; i < 10000; i++ {
		ev, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
	t.Fatalf("reader never ended")
	return nil, nil
}

func TestSSEReader(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		maxLine int
		want    []string // "event|data"
		err     error
	}{
		{"lf", "data: a\n\ndata: b\n\n", 0, []string{"|a", "|b"}, io.EOF},
		{"crlf", "event: x\r\ndata: a\r\n\r\ndata: b\r\n\r\n", 0, []string{"x|a", "|b"}, io.EOF},
		{"multi-line data joined", "data: {\"a\":\ndata: 1}\n\n", 0, []string{"|{\"a\":\n1}"}, io.EOF},
		{"no space after colon", "data:x\n\n", 0, []string{"|x"}, io.EOF},
		{"comments and unknown fields skipped", ": OPENROUTER PROCESSING\n\nid: 7\nretry: 10\ndata: a\n\n", 0, []string{"|a"}, io.EOF},
		{"event without data not dispatched", "event: ping\n\ndata: a\n\n", 0, []string{"|a"}, io.EOF},
		{"bom", "\xEF\xBB\xBFdata: a\n\n", 0, []string{"|a"}, io.EOF},
		{"last event without blank line kept", "data: a\n\ndata: b\n", 0, []string{"|a", "|b"}, io.EOF},
		{"line cut mid-way dropped", "data: a\n\ndata: {\"tru", 0, []string{"|a"}, io.EOF},
		{"line at the limit", "data: " + strings.Repeat("x", 26) + "\n\n", 32, []string{"|" + strings.Repeat("x", 26)}, io.EOF},
		{"line over the limit", "data: a\n\ndata: " + strings.Repeat("x", 27) + "\n\n", 32, []string{"|a"}, ErrSSELineTooLong},
		{"huge line without newline", strings.Repeat("y", 100<<10), 1 << 10, nil, ErrSSELineTooLong},
		{"empty", "", 0, nil, io.EOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// One byte per read: event boundaries never align with reads.
			for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
				evs, err := readAll(t, NewSSEReader(r, tc.maxLine))
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				var got []string
				for _, ev := range evs {
					got = append(got, ev.Event+"|"+string(ev.Data))
				}
				if strings.Join(got, ";") != strings.Join(tc.want, ";") {
					t.Fatalf("events %q, want %q", got, tc.want)
				}
			}
		})
	}
}

func FuzzSSEReader(f *testing.F) {
	for _, s := range []string{"data: a\n\n", "event: x\r\ndata: a\r\ndata: b\r\n\r\n", ": c\n\ndata:\n\n", "data: " + strings.Repeat("z", 70) + "\n\n", "\xEF\xBB\xBFdata: a"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const maxLine = 64
		evs, err := readAll(t, NewSSEReader(strings.NewReader(string(in)), maxLine))
		if err != io.EOF && !errors.Is(err, ErrSSELineTooLong) {
			t.Fatalf("unexpected error %v", err)
		}
		total := 0
		for _, ev := range evs {
			total += len(ev.Data) + len(ev.Event)
		}
		if total > len(in) {
			t.Fatalf("%d bytes of events from %d bytes of input", total, len(in))
		}
	})
}
