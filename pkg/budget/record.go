package budget

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"time"
)

// Window kinds.
const (
	Day   = "day"
	Month = "month"
)

// Period formats of the windows (UTC).
const (
	dayLayout   = "20060102"
	monthLayout = "200601"
)

// window is the JSON value stored under one window key. Every change is
// written with the key's last revision as a precondition (compare-and-set).
//
// Amounts are USD as floats for operators reading the bucket, but every
// sum is computed in integer nano-USD (see nano), so ten reservations of
// 0.1 fill a budget of 1.0 exactly.
type window struct {
	Tenant string `json:"tenant"`
	// Window is "day" or "month"; Period is 20261123 or 202611 (UTC).
	Window string `json:"window"`
	Period string `json:"period"`
	// SpentUSD is the settled cost.
	SpentUSD float64 `json:"spent_usd"`
	// ReservedUSD is the sum of Reservations (kept for readers).
	ReservedUSD float64 `json:"reserved_usd"`
	// Requests counts reservations made in the window (released ones are
	// taken back off).
	Requests int `json:"requests"`
	// Reservations are the outstanding holds by reservation id.
	Reservations map[string]hold `json:"reservations,omitempty"`
	// Expired holds lapsed without a settle; the id is kept (with the time
	// it may still be settled until) so a late settle counts its cost once.
	Expired map[string]time.Time `json:"expired,omitempty"`
	// LimitUSD and LimitRequests are the limits in force at the last
	// reservation (0 = unlimited), so Usage can report the fraction used.
	LimitUSD      float64 `json:"limit_usd,omitempty"`
	LimitRequests int     `json:"limit_requests,omitempty"`
	// Updated is when this revision was written, By which instance.
	Updated time.Time `json:"updated,omitzero"`
	By      string    `json:"by,omitempty"`
}

// hold is one outstanding reservation.
type hold struct {
	USD     float64   `json:"usd"`
	Expires time.Time `json:"expires"`
}

func (w window) clone() window {
	w.Reservations = maps.Clone(w.Reservations)
	w.Expired = maps.Clone(w.Expired)
	return w
}

// nano converts USD to integer nano-USD.
func nano(usd float64) int64 { return int64(math.Round(usd * 1e9)) }

func fromNano(n int64) float64 { return float64(n) / 1e9 }

// reservedNano sums the holds.
func (w *window) reservedNano() int64 {
	var n int64
	for _, h := range w.Reservations {
		n += nano(h.USD)
	}
	return n
}

// expire moves the holds that lapsed at now to Expired and forgets expired
// ids whose late-settle time has passed. It reports whether anything
// changed.
func (w *window) expire(now time.Time, lateSettle time.Duration) bool {
	changed := false
	for id, h := range w.Reservations {
		if !now.Before(h.Expires) {
			delete(w.Reservations, id)
			if lateSettle > 0 {
				if w.Expired == nil {
					w.Expired = map[string]time.Time{}
				}
				w.Expired[id] = h.Expires.Add(lateSettle)
			}
			changed = true
		}
	}
	for id, until := range w.Expired {
		if !now.Before(until) {
			delete(w.Expired, id)
			changed = true
		}
	}
	return changed
}

// normalise recomputes the derived fields before a write.
func (w *window) normalise() {
	if len(w.Reservations) == 0 {
		w.Reservations = nil
	}
	if len(w.Expired) == 0 {
		w.Expired = nil
	}
	w.SpentUSD = fromNano(nano(w.SpentUSD))
	w.ReservedUSD = fromNano(w.reservedNano())
}

// ErrInvalidTenant is returned for an empty tenant name.
var ErrInvalidTenant = errors.New("budget: tenant must not be empty")

// windowKey is the KV key of a tenant's window: <tenant>.d.20261123 or
// <tenant>.m.202611, the tenant escaped by escapeTenant.
func windowKey(tenant, kind, period string) string {
	k := "d"
	if kind == Month {
		k = "m"
	}
	return escapeTenant(tenant) + "." + k + "." + period
}

// periods returns the UTC day and month periods of t.
func periods(t time.Time) (day, month string) {
	t = t.UTC()
	return t.Format(dayLayout), t.Format(monthLayout)
}

// escapeTenant maps a tenant name to one KV key token. Letters, digits, '-'
// and '_' are kept; every other byte (including '.', the token separator,
// and '=' itself) becomes '=' followed by two upper-case hex digits:
// "acme.eu" is stored as "acme=2Eeu".
func escapeTenant(s string) string {
	if keepAll(s) {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keep(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0x0f])
	}
	return b.String()
}

func keep(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func keepAll(s string) bool {
	for i := 0; i < len(s); i++ {
		if !keep(s[i]) {
			return false
		}
	}
	return true
}

// LimitError is returned by Reserve when a limit would be exceeded. It
// matches ErrBudgetExceeded (USD) or ErrQuotaExceeded (requests) with
// errors.Is.
type LimitError struct {
	Tenant string
	// Window is Day or Month; Period is 20261123 or 202611 (UTC).
	Window string
	Period string
	// Quota is true for a request-count limit, false for USD.
	Quota bool
	// Limit is the limit (USD or requests); Used is what is spent plus
	// reserved (USD) or the request count so far; Asked is the estimate
	// (USD) or 1 (requests).
	Limit, Used, Asked float64
}

func (e *LimitError) Error() string {
	if e.Quota {
		return fmt.Sprintf("budget: tenant %s: %s request quota exceeded (%s: %.0f of %.0f used)",
			e.Tenant, e.Window, e.Period, e.Used, e.Limit)
	}
	return fmt.Sprintf("budget: tenant %s: %s budget exceeded (%s: $%.6f spent or reserved + $%.6f estimated > $%.6f)",
		e.Tenant, e.Window, e.Period, e.Used, e.Asked, e.Limit)
}

// Unwrap returns ErrQuotaExceeded or ErrBudgetExceeded.
func (e *LimitError) Unwrap() error {
	if e.Quota {
		return ErrQuotaExceeded
	}
	return ErrBudgetExceeded
}

// admit checks one more request of estimate nano-USD against the limits
// and takes the hold. The window must have been expired at now first.
func (w *window) admit(id string, estimate int64, limitUSD float64, limitReq int, expires time.Time) error {
	w.LimitUSD, w.LimitRequests = limitUSD, limitReq
	if limitReq > 0 && w.Requests+1 > limitReq {
		return &LimitError{Tenant: w.Tenant, Window: w.Window, Period: w.Period, Quota: true,
			Limit: float64(limitReq), Used: float64(w.Requests), Asked: 1}
	}
	if limitUSD > 0 {
		used := nano(w.SpentUSD) + w.reservedNano()
		if used+estimate > nano(limitUSD) {
			return &LimitError{Tenant: w.Tenant, Window: w.Window, Period: w.Period,
				Limit: limitUSD, Used: fromNano(used), Asked: fromNano(estimate)}
		}
	}
	if w.Reservations == nil {
		w.Reservations = map[string]hold{}
	}
	w.Reservations[id] = hold{USD: fromNano(estimate), Expires: expires}
	w.Requests++
	return nil
}
