package breaker

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// State is a breaker's position.
type State uint8

// The states. The zero value is Closed, so an unknown key is closed.
const (
	StateClosed State = iota
	StateOpen
	StateHalfOpen
)

func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateOpen:
		return "open"
	case StateHalfOpen:
		return "half_open"
	default:
		return fmt.Sprintf("state(%d)", uint8(s))
	}
}

// MarshalText encodes the state as closed, open or half_open.
func (s State) MarshalText() ([]byte, error) {
	if s > StateHalfOpen {
		return nil, fmt.Errorf("breaker: invalid state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText is the inverse of MarshalText.
func (s *State) UnmarshalText(b []byte) error {
	switch string(b) {
	case "closed":
		*s = StateClosed
	case "open":
		*s = StateOpen
	case "half_open":
		*s = StateHalfOpen
	default:
		return fmt.Errorf("breaker: unknown state %q", b)
	}
	return nil
}

// record is the JSON value stored under a breaker's KV key. Every change is
// written with the key's last revision as a precondition (compare-and-set).
type record struct {
	// Key is the breaker key as given by the caller ("vendor/model").
	Key   string `json:"key"`
	State State  `json:"state"`
	// Gen counts transitions. Permits carry the generation they were granted
	// in; an outcome recorded against an older generation is stale and
	// ignored.
	Gen uint64 `json:"gen"`
	// Failures is the consecutive-failure count while closed, and the count
	// that opened the breaker while open.
	Failures int `json:"failures"`
	// Successes counts successful trial calls while half-open.
	Successes int `json:"successes,omitempty"`
	// OpenUntil is when an open breaker starts admitting trial calls.
	OpenUntil time.Time `json:"open_until,omitzero"`
	// Probes are the outstanding half-open permits.
	Probes []probe `json:"probes,omitempty"`
	// Since is when the current state was entered; Reason says why.
	Since  time.Time `json:"since,omitzero"`
	Reason string    `json:"reason,omitempty"`
	// By is the instance that wrote this revision (for operators).
	By string `json:"by,omitempty"`
}

type probe struct {
	ID      string    `json:"id"`
	Expires time.Time `json:"expires"`
}

func (r record) clone() record {
	if r.Probes != nil {
		r.Probes = append([]probe(nil), r.Probes...)
	}
	return r
}

// pruneProbes drops expired probes and reports whether any was dropped.
func (r *record) pruneProbes(now time.Time) bool {
	kept := r.Probes[:0]
	for _, p := range r.Probes {
		if now.Before(p.Expires) {
			kept = append(kept, p)
		}
	}
	dropped := len(kept) != len(r.Probes)
	r.Probes = kept
	if len(r.Probes) == 0 {
		r.Probes = nil
	}
	return dropped
}

// removeProbe drops the probe with the given id and reports whether it was
// there.
func (r *record) removeProbe(id string) bool {
	for i, p := range r.Probes {
		if p.ID == id {
			r.Probes = append(r.Probes[:i], r.Probes[i+1:]...)
			if len(r.Probes) == 0 {
				r.Probes = nil
			}
			return true
		}
	}
	return false
}

// liveProbes counts the probes that have not expired at now.
func (r *record) liveProbes(now time.Time) int {
	n := 0
	for _, p := range r.Probes {
		if now.Before(p.Expires) {
			n++
		}
	}
	return n
}

// ErrInvalidKey is returned for an empty breaker key.
var ErrInvalidKey = errors.New("breaker: key must not be empty")

// kvKey maps a breaker key to a KeyValue key. Letters, digits, '-', '_' and
// '/' are kept; every other byte (including '.', which would split the NATS
// subject, and '=' itself) becomes '=' followed by two upper-case hex
// digits. "openai/gpt-4.1" is stored as "openai/gpt-4=2E1".
func kvKey(key string) (string, error) {
	if key == "" {
		return "", ErrInvalidKey
	}
	if keepAll(key) {
		return key, nil
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(key) + 8)
	for i := 0; i < len(key); i++ {
		c := key[i]
		if keep(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0x0f])
	}
	return b.String(), nil
}

// breakerKey is the inverse of kvKey.
func breakerKey(k string) (string, error) {
	if strings.IndexByte(k, '=') < 0 {
		if k == "" {
			return "", ErrInvalidKey
		}
		return k, nil
	}
	b := make([]byte, 0, len(k))
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c != '=' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(k) {
			return "", fmt.Errorf("breaker: malformed kv key %q", k)
		}
		hi, ok1 := unhex(k[i+1])
		lo, ok2 := unhex(k[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("breaker: malformed kv key %q", k)
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), nil
}

func keep(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '/'
}

func keepAll(s string) bool {
	for i := 0; i < len(s); i++ {
		if !keep(s[i]) {
			return false
		}
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
