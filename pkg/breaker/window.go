package breaker

import (
	"sync"
	"time"
)

// windowSlots is the resolution of the sliding failure-rate window.
const windowSlots = 10

// rateWindow counts calls and failures of one breaker generation over a
// sliding window made of windowSlots time slots. It is local to one
// instance: healthy calls are never written to the shared bucket.
type rateWindow struct {
	mu    sync.Mutex
	gen   uint64
	slots [windowSlots]slot
}

type slot struct {
	epoch int64 // slot index since the Unix epoch
	total int
	fails int
}

// add records one call of generation gen at now and returns the window's
// totals. Calls of an older generation are ignored (total 0); a newer
// generation clears the window.
func (w *rateWindow) add(gen uint64, now time.Time, failed bool, window time.Duration) (total, fails int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen < w.gen {
		return 0, 0
	}
	if gen > w.gen {
		w.gen = gen
		w.slots = [windowSlots]slot{}
	}
	width := int64(window) / windowSlots
	if width <= 0 {
		width = 1
	}
	epoch := now.UnixNano() / width
	idx := epoch % windowSlots
	if idx < 0 {
		idx += windowSlots
	}
	s := &w.slots[idx]
	if s.epoch != epoch {
		*s = slot{epoch: epoch}
	}
	s.total++
	if failed {
		s.fails++
	}
	for _, s := range w.slots {
		if s.epoch > epoch-windowSlots && s.epoch <= epoch {
			total += s.total
			fails += s.fails
		}
	}
	return total, fails
}

// reset clears the window for generation gen (after this instance tripped
// the breaker).
func (w *rateWindow) reset(gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen >= w.gen {
		w.gen = gen
		w.slots = [windowSlots]slot{}
	}
}
