package provider

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// MaxSSELine caps one line of a vendor's event stream: a longer line is a
// broken stream (bad_response), not a reason to buffer without bound.
const MaxSSELine = 1 << 20

// ErrSSELineTooLong is returned by SSEReader.Next for a line longer than
// its limit.
var ErrSSELineTooLong = errors.New("event stream line too long")

// SSEEvent is one dispatched server-sent event.
type SSEEvent struct {
	Event string // the event field; "" when the stream names none
	Data  []byte // the data lines joined by "\n"
}

// SSEReader decodes a text/event-stream body (the WHATWG format): fields
// "event" and "data", comment lines starting with ':', events ending at a
// blank line. Lines may end in LF or CRLF; an event's data lines are joined
// with "\n". Fields other than event and data (id, retry) are ignored.
type SSEReader struct {
	r       *bufio.Reader
	maxLine int
	line    []byte
	first   bool
}

// NewSSEReader reads events from r with lines up to maxLine bytes
// (MaxSSELine when maxLine <= 0).
func NewSSEReader(r io.Reader, maxLine int) *SSEReader {
	if maxLine <= 0 {
		maxLine = MaxSSELine
	}
	return &SSEReader{r: bufio.NewReaderSize(r, 16<<10), maxLine: maxLine, first: true}
}

// readLine returns the next line without its terminator. At the end of the
// body it returns what was read of an unterminated last line with the error.
func (s *SSEReader) readLine() (line []byte, err error) {
	s.line = s.line[:0]
	for {
		chunk, err := s.r.ReadSlice('\n')
		if len(s.line)+len(chunk) > s.maxLine+2 { // +2: the CRLF itself
			return nil, ErrSSELineTooLong
		}
		s.line = append(s.line, chunk...)
		switch {
		case err == nil:
			line = bytes.TrimSuffix(bytes.TrimSuffix(s.line, []byte("\n")), []byte("\r"))
			if len(line) > s.maxLine {
				return nil, ErrSSELineTooLong
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return s.line, err
		}
	}
}

// Next returns the next event. At the end of the body it returns io.EOF;
// an event the body ended inside (no blank line after it) is still
// dispatched when its last line was complete, and dropped when the body
// was cut in the middle of a line. Other read errors are returned as they
// are.
func (s *SSEReader) Next() (SSEEvent, error) {
	var ev SSEEvent
	var data []byte
	hasData := false
	dispatch := func() (SSEEvent, bool) {
		if !hasData {
			ev = SSEEvent{}
			return ev, false
		}
		ev.Data = data
		return ev, true
	}
	for {
		line, err := s.readLine()
		if err != nil {
			if err != io.EOF {
				return SSEEvent{}, err
			}
			// A partial last line means the body was cut mid-line.
			if len(line) == 0 {
				if out, ok := dispatch(); ok {
					return out, nil
				}
			}
			return SSEEvent{}, io.EOF
		}
		if s.first {
			s.first = false
			line = bytes.TrimPrefix(line, []byte("\xEF\xBB\xBF"))
		}
		if len(line) == 0 {
			if out, ok := dispatch(); ok {
				return out, nil
			}
			continue
		}
		if line[0] == ':' {
			continue // a comment: keep-alive, OpenRouter's processing notice
		}
		field, value, found := bytes.Cut(line, []byte(":"))
		if found && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(field) {
		case "event":
			ev.Event = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		}
	}
}
