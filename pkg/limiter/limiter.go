// Package limiter enforces per-vendor request and token limits across all
// executor replicas with JetStream itself as the shared state: each vendor
// has a memory stream whose messages are the calls (and tokens) of the last
// minute. MaxAge ages them out, MaxMsgs/MaxBytes with DiscardNew make the
// server refuse a call over the limit. No extra datastore, no clock
// agreement between replicas, and the window is a true sliding minute.
package limiter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Window is the limit window: requests and tokens per minute.
const Window = time.Minute

// Limits of one vendor; zero means unlimited.
type Limits struct {
	RPM int
	TPM int
}

// Limiter acquires call slots for vendors.
type Limiter struct {
	js      jetstream.JetStream
	vendors map[string]*vendorLimit
}

type vendorLimit struct {
	limits    Limits
	rpmStream string
	tpmStream string
}

// memOverhead is what the memory store counts per message besides the
// payload; the token stream's payload is shortened by it so a call of n
// tokens takes about n bytes of MaxBytes.
func memOverhead(subject string) int { return len(subject) + 16 }

// New creates or updates the limit streams of every vendor with a limit.
func New(ctx context.Context, js jetstream.JetStream, limits map[string]Limits) (*Limiter, error) {
	l := &Limiter{js: js, vendors: map[string]*vendorLimit{}}
	var errs []error
	for vendor, lim := range limits {
		if lim.RPM <= 0 && lim.TPM <= 0 {
			continue
		}
		v := &vendorLimit{limits: lim}
		name := strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(vendor))
		if lim.RPM > 0 {
			v.rpmStream = StreamPrefix + "RPM_" + name
			if err := ensure(ctx, js, v.rpmStream, rpmSubject(vendor), jetstream.StreamConfig{MaxMsgs: int64(lim.RPM)}); err != nil {
				errs = append(errs, err)
			}
		}
		if lim.TPM > 0 {
			v.tpmStream = StreamPrefix + "TPM_" + name
			if err := ensure(ctx, js, v.tpmStream, tpmSubject(vendor), jetstream.StreamConfig{MaxBytes: int64(lim.TPM)}); err != nil {
				errs = append(errs, err)
			}
		}
		l.vendors[vendor] = v
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

// StreamPrefix begins the names of the in-memory window streams every
// process creates (a NATS restart loses them; natsauth lets every service
// user create them).
const StreamPrefix = "LLM_LIMIT_"

func rpmSubject(vendor string) string { return "llm.limit.rpm." + vendor }
func tpmSubject(vendor string) string { return "llm.limit.tpm." + vendor }

func ensure(ctx context.Context, js jetstream.JetStream, name, subject string, sc jetstream.StreamConfig) error {
	sc.Name = name
	sc.Description = "sliding one-minute window of vendor calls (switchyard limiter)"
	sc.Subjects = []string{subject}
	sc.Retention = jetstream.LimitsPolicy
	sc.Discard = jetstream.DiscardNew
	sc.MaxAge = Window
	sc.Duplicates = Window
	sc.Storage = jetstream.MemoryStorage
	if sc.MaxMsgs == 0 {
		sc.MaxMsgs = -1
	}
	if sc.MaxBytes == 0 {
		sc.MaxBytes = -1
	}
	if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("limit stream %s: %w", name, err)
	}
	return nil
}

// Saturated says a vendor is at its limit and when a slot frees up.
type Saturated struct {
	Vendor     string
	Limit      string // "rpm" or "tpm"
	RetryAfter time.Duration
}

func (e *Saturated) Error() string {
	return fmt.Sprintf("vendor %s at its %s limit; next slot in %s", e.Vendor, e.Limit, e.RetryAfter.Round(time.Millisecond))
}

// Acquire takes one call (and tokens) from the vendor's window. It returns
// *Saturated when the vendor is at a limit. callID deduplicates: the same
// attempt acquiring twice (a redelivery) takes one slot.
func (l *Limiter) Acquire(ctx context.Context, vendor string, tokens int, callID string) error {
	v, ok := l.vendors[vendor]
	if !ok {
		return nil
	}
	if v.rpmStream != "" {
		m := &nats.Msg{Subject: rpmSubject(vendor), Header: nats.Header{}}
		m.Header.Set("Nats-Msg-Id", callID)
		if _, err := l.js.PublishMsg(ctx, m); err != nil {
			return l.classify(ctx, err, vendor, "rpm", v.rpmStream)
		}
	}
	if v.tpmStream != "" && tokens > 0 {
		subject := tpmSubject(vendor)
		size := max(tokens-memOverhead(subject), 0)
		if _, err := l.js.Publish(ctx, subject, make([]byte, size)); err != nil {
			return l.classify(ctx, err, vendor, "tpm", v.tpmStream)
		}
	}
	return nil
}

// classify turns the server's "maximum messages/bytes exceeded" refusal
// into *Saturated, with the time until the oldest call leaves the window.
func (l *Limiter) classify(ctx context.Context, err error, vendor, limit, stream string) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || !strings.Contains(apiErr.Description, "maximum") {
		return fmt.Errorf("limiter %s: %w", vendor, err)
	}
	s := &Saturated{Vendor: vendor, Limit: limit, RetryAfter: time.Second}
	if st, err := l.js.Stream(ctx, stream); err == nil {
		if info, err := st.Info(ctx); err == nil && !info.State.FirstTime.IsZero() {
			s.RetryAfter = max(time.Until(info.State.FirstTime.Add(Window)), 10*time.Millisecond)
		}
	}
	return s
}
