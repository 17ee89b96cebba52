package tcpscan

import (
	"sync"
	"time"
)

// bucket is a token bucket of connection attempts: rate tokens a second, holding at most
// 20 ms of them (a burst of rate/50, at least one). A rate of 0 (or a nil bucket) is
// unlimited.
//
// The bridge's budget is one bucket that every tcp_scan probe running on the bridge draws
// from (Config.Rate): a scanner has one rate, as nmap's --max-rate is one rate for the
// whole scan, so a bridge that holds several scan chunks at once still sends no more than
// its configured attempts per second — what an operator promised the site's network — and
// the chunks share it. A probe's own rate (its rate param) is a second bucket of its own, in
// front of the bridge's: it can only lower the probe's share, never lift the bridge's.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
}

func newBucket(rate float64) *bucket {
	if rate <= 0 {
		return nil
	}
	return &bucket{rate: rate}
}

// take takes one attempt's token at now; when none is left it says how long to wait for one.
func (b *bucket) take(now time.Time) (bool, time.Duration) {
	if b == nil {
		return true, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	burst := max(1, b.rate/50)
	if b.last.IsZero() {
		b.tokens, b.last = burst, now
	}
	if now.After(b.last) {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false, max(time.Duration((1-b.tokens)/b.rate*float64(time.Second)), time.Microsecond)
	}
	b.tokens--
	return true, 0
}

// giveBack returns a token taken by take that was not spent (the bridge's budget had none).
func (b *bucket) giveBack() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.tokens++
	b.mu.Unlock()
}
