package sim

import (
	"sync"
	"sync/atomic"
	"time"
)

// maxTrackedModels caps distinct vendor/model keys, so arbitrary model names
// cannot grow memory without bound; the rest are counted under "(other)".
const maxTrackedModels = 4096

// Calls is the per vendor, per model call count snapshot.
type Calls struct {
	Since   time.Time                        `json:"since"`
	Total   int64                            `json:"total"`
	Vendors map[string]map[string]ModelCalls `json:"vendors"`
}

// ModelCalls counts one vendor/model's calls. Calls rejected before the
// model was known (bad JSON, missing model) are under model "-".
type ModelCalls struct {
	Calls    int64         `json:"calls"`
	ByStatus map[int]int64 `json:"by_status"`
	// PeakPerMinute is the most calls seen in one calendar minute;
	// CurrentMinute the calls in the current one.
	PeakPerMinute int64 `json:"peak_per_minute"`
	CurrentMinute int64 `json:"current_minute"`
	InputTokens   int64 `json:"input_tokens"`
	OutputTokens  int64 `json:"output_tokens"`
	CachedTokens  int64 `json:"cached_tokens"`
	// LastPrompt is the prompt text of the latest answered call, as the
	// vendor received it: tests use it to prove what left the gateway
	// (e.g. that personal data was redacted).
	LastPrompt string `json:"last_prompt,omitempty"`
}

// Model returns one model's counts (zero if never called).
func (c Calls) Model(vendor, model string) ModelCalls {
	return c.Vendors[vendor][model]
}

// Vendor sums a vendor's counts over its models.
func (c Calls) Vendor(vendor string) ModelCalls {
	out := ModelCalls{ByStatus: map[int]int64{}}
	for _, m := range c.Vendors[vendor] {
		out.Calls += m.Calls
		out.InputTokens += m.InputTokens
		out.OutputTokens += m.OutputTokens
		out.CachedTokens += m.CachedTokens
		out.PeakPerMinute += m.PeakPerMinute
		out.CurrentMinute += m.CurrentMinute
		for s, n := range m.ByStatus {
			out.ByStatus[s] += n
		}
	}
	return out
}

// modelState is the mutable state of one vendor/model: lock-free counters
// and, only when RPM/TPM limits are set, a sliding-window limiter.
type modelState struct {
	vendor, model string
	calls         atomic.Int64
	byStatus      [600]atomic.Int64
	inTok, outTok atomic.Int64
	cachedTok     atomic.Int64
	minute        atomic.Uint64 // minute index << 32 | count in that minute
	peak          atomic.Int64
	errSeq        atomic.Uint64
	lim           limiter
	lastPrompt    atomic.Pointer[string]
}

func (m *modelState) record(status, in, out, cached int, now time.Time) {
	m.calls.Add(1)
	if status >= 0 && status < len(m.byStatus) {
		m.byStatus[status].Add(1)
	}
	if in > 0 || out > 0 {
		m.inTok.Add(int64(in))
		m.outTok.Add(int64(out))
		m.cachedTok.Add(int64(cached))
	}
	minute := uint64(now.Unix()/60) & 0xffffffff
	for {
		cur := m.minute.Load()
		var next uint64
		if cur>>32 == minute {
			next = cur + 1
		} else {
			next = minute<<32 | 1
		}
		if m.minute.CompareAndSwap(cur, next) {
			n := int64(next & 0xffffffff)
			for {
				p := m.peak.Load()
				if n <= p || m.peak.CompareAndSwap(p, n) {
					break
				}
			}
			return
		}
	}
}

func (m *modelState) snapshot(now time.Time) ModelCalls {
	mc := ModelCalls{
		Calls:         m.calls.Load(),
		ByStatus:      map[int]int64{},
		PeakPerMinute: m.peak.Load(),
		InputTokens:   m.inTok.Load(),
		OutputTokens:  m.outTok.Load(),
		CachedTokens:  m.cachedTok.Load(),
	}
	if p := m.lastPrompt.Load(); p != nil {
		mc.LastPrompt = *p
	}
	for s := range m.byStatus {
		if n := m.byStatus[s].Load(); n > 0 {
			mc.ByStatus[s] = n
		}
	}
	if cur := m.minute.Load(); cur>>32 == uint64(now.Unix()/60)&0xffffffff {
		mc.CurrentMinute = int64(cur & 0xffffffff)
	}
	return mc
}

// registry holds the model states; replaced wholesale on reset.
type registry struct {
	since time.Time
	m     sync.Map // vendor + "\x00" + model -> *modelState
	n     atomic.Int64
}

func newRegistry() *registry { return &registry{since: time.Now()} }

func (r *registry) get(vendor, model string) *modelState {
	key := vendor + "\x00" + model
	if v, ok := r.m.Load(key); ok {
		return v.(*modelState)
	}
	if r.n.Load() >= maxTrackedModels {
		model = "(other)"
		key = vendor + "\x00" + model
		if v, ok := r.m.Load(key); ok {
			return v.(*modelState)
		}
	}
	v, loaded := r.m.LoadOrStore(key, &modelState{vendor: vendor, model: model})
	if !loaded {
		r.n.Add(1)
	}
	return v.(*modelState)
}

func (r *registry) snapshot(now time.Time) Calls {
	c := Calls{Since: r.since, Vendors: map[string]map[string]ModelCalls{}}
	r.m.Range(func(_, v any) bool {
		ms := v.(*modelState)
		snap := ms.snapshot(now)
		if c.Vendors[ms.vendor] == nil {
			c.Vendors[ms.vendor] = map[string]ModelCalls{}
		}
		c.Vendors[ms.vendor][ms.model] = snap
		c.Total += snap.Calls
		return true
	})
	return c
}

// limiter is a sliding 60 s window over request times and token counts.
type limiter struct {
	mu    sync.Mutex
	reqs  []int64 // unix nanos, oldest first from reqHead
	rHead int
	toks  []tokEvent
	tHead int
	tSum  int
}

type tokEvent struct {
	at int64
	n  int
}

// rateWindow is the rate-limit window.
const rateWindow = time.Minute

// limitState is what the rate-limit headers report.
type limitState struct {
	rpm, tpm             int
	remainingReq         int
	remainingTok         int
	resetReq, resetTok   time.Duration
	limited              bool
	retryAfter           time.Duration
	limitedByTokens      bool
	requestedTok, usedTo int
}

// admit records a call of n tokens if it fits under rpm and tpm (0 =
// unlimited) and reports the window state either way.
func (l *limiter) admit(now time.Time, rpm, tpm, n int) limitState {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := now.UnixNano()
	cutoff := ts - int64(rateWindow)
	for l.rHead < len(l.reqs) && l.reqs[l.rHead] <= cutoff {
		l.rHead++
	}
	for l.tHead < len(l.toks) && l.toks[l.tHead].at <= cutoff {
		l.tSum -= l.toks[l.tHead].n
		l.tHead++
	}
	st := limitState{rpm: rpm, tpm: tpm, requestedTok: n}
	used := len(l.reqs) - l.rHead
	switch {
	case rpm > 0 && used >= rpm:
		st.limited = true
		st.retryAfter = time.Duration(l.reqs[l.rHead] + int64(rateWindow) - ts)
	case tpm > 0 && l.tSum+n > tpm:
		st.limited, st.limitedByTokens = true, true
		if n > tpm {
			st.retryAfter = rateWindow
		} else {
			need, freed := l.tSum+n-tpm, 0
			for i := l.tHead; i < len(l.toks); i++ {
				freed += l.toks[i].n
				if freed >= need {
					st.retryAfter = time.Duration(l.toks[i].at + int64(rateWindow) - ts)
					break
				}
			}
		}
	default:
		if rpm > 0 {
			l.reqs = append(l.reqs, ts)
			used++
		}
		if tpm > 0 {
			l.toks = append(l.toks, tokEvent{at: ts, n: n})
			l.tSum += n
		}
	}
	st.usedTo = l.tSum
	st.remainingReq = max(rpm-used, 0)
	st.remainingTok = max(tpm-l.tSum, 0)
	if l.rHead < len(l.reqs) {
		st.resetReq = time.Duration(l.reqs[l.rHead] + int64(rateWindow) - ts)
	}
	if l.tHead < len(l.toks) {
		st.resetTok = time.Duration(l.toks[l.tHead].at + int64(rateWindow) - ts)
	}
	// Compact the deques once their dead prefix dominates.
	if l.rHead > 1024 && l.rHead*2 > len(l.reqs) {
		l.reqs = append(l.reqs[:0], l.reqs[l.rHead:]...)
		l.rHead = 0
	}
	if l.tHead > 1024 && l.tHead*2 > len(l.toks) {
		l.toks = append(l.toks[:0], l.toks[l.tHead:]...)
		l.tHead = 0
	}
	return st
}
