package clock

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Fake is a clock that moves only when told (Advance, Set). Timers and tickers fire, in
// the order of their due times, from the Advance that passes them; AfterFunc functions run
// in Advance's goroutine, so when Advance returns they have run.
//
// Channels have room for one value, like the time package's: a ticker whose reader is slow
// drops ticks rather than piling them up.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64 // keeps timers due at the same time in creation order
	waiters []*fakeTimer
	changed chan struct{} // closed and replaced whenever waiters change (BlockUntil)
}

// NewFake starts a fake clock at start (a fixed instant: tests never depend on today).
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

// Now is the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Since is Now().Sub(t).
func (f *Fake) Since(t time.Time) time.Duration { return f.Now().Sub(t) }

// After returns a channel that receives the fake time once d has passed.
func (f *Fake) After(d time.Duration) <-chan time.Time { return f.NewTimer(d).C() }

// NewTimer makes a timer that fires once d has passed.
func (f *Fake) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{clock: f, ch: make(chan time.Time, 1)}
	f.mu.Lock()
	f.schedule(t, d)
	f.mu.Unlock()
	return t
}

// AfterFunc calls fn from the Advance that passes d.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	t := &fakeTimer{clock: f, fn: fn}
	f.mu.Lock()
	f.schedule(t, d)
	f.mu.Unlock()
	return t
}

// NewTicker makes a ticker of period d (d > 0, as the time package wants).
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	t := &fakeTimer{clock: f, ch: make(chan time.Time, 1), period: d}
	f.mu.Lock()
	f.schedule(t, d)
	f.mu.Unlock()
	return tickerOf{t}
}

// Advance moves the clock forward by d, firing every timer and tick due on the way at its
// own due time.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	target := f.now.Add(d)
	f.mu.Unlock()
	f.runUntil(target)
}

// Set moves the clock to t (never backwards: an earlier t is ignored), firing what is due.
func (f *Fake) Set(t time.Time) { f.runUntil(t) }

func (f *Fake) runUntil(target time.Time) {
	for {
		f.mu.Lock()
		if len(f.waiters) == 0 || f.waiters[0].when.After(target) {
			if target.After(f.now) {
				f.now = target
			}
			f.mu.Unlock()
			return
		}
		t := f.waiters[0]
		f.waiters = f.waiters[1:]
		if t.when.After(f.now) {
			f.now = t.when
		}
		now := f.now
		if t.period > 0 {
			f.insert(t, t.when.Add(t.period))
		} else {
			t.active = false
		}
		f.notify()
		f.mu.Unlock()
		if t.fn != nil {
			t.fn()
			continue
		}
		select {
		case t.ch <- now:
		default: // the reader has not taken the last value: drop this one
		}
	}
}

// Waiters is the number of timers, tickers and AfterFuncs waiting to fire.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// BlockUntil waits until at least n timers are waiting (a goroutine under test reached its
// select), or ctx ends; it reports whether they are.
func (f *Fake) BlockUntil(ctx context.Context, n int) bool {
	for {
		f.mu.Lock()
		ok, changed := len(f.waiters) >= n, f.changed
		f.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// schedule (f.mu held) arms t to fire d from now.
func (f *Fake) schedule(t *fakeTimer, d time.Duration) {
	f.insert(t, f.now.Add(d))
	f.notify()
}

func (f *Fake) insert(t *fakeTimer, when time.Time) {
	f.seq++
	t.when, t.seq, t.active = when, f.seq, true
	i, _ := slices.BinarySearchFunc(f.waiters, t, func(a, b *fakeTimer) int {
		if c := a.when.Compare(b.when); c != 0 {
			return c
		}
		return compare(a.seq, b.seq)
	})
	f.waiters = slices.Insert(f.waiters, i, t)
}

func compare(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// remove (f.mu held) disarms t; it reports whether t was waiting.
func (f *Fake) remove(t *fakeTimer) bool {
	if !t.active {
		return false
	}
	t.active = false
	if i := slices.Index(f.waiters, t); i >= 0 {
		f.waiters = slices.Delete(f.waiters, i, i+1)
	}
	f.notify()
	return true
}

func (f *Fake) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// fakeTimer is a Fake's timer, ticker or AfterFunc.
type fakeTimer struct {
	clock  *Fake
	ch     chan time.Time
	fn     func()
	period time.Duration // tickers
	when   time.Time
	seq    uint64
	active bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	return t.clock.remove(t)
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := t.clock.remove(t)
	if t.period > 0 {
		t.period = d
	}
	t.clock.schedule(t, d)
	return was
}

var (
	_ Timer  = (*fakeTimer)(nil)
	_ Clock  = (*Fake)(nil)
	_ Ticker = tickerOf{}
)

// tickerOf is a ticker: a fakeTimer with a period, whose Stop and Reset return nothing.
type tickerOf struct{ t *fakeTimer }

func (k tickerOf) C() <-chan time.Time   { return k.t.ch }
func (k tickerOf) Stop()                 { k.t.Stop() }
func (k tickerOf) Reset(d time.Duration) { k.t.Reset(d) }
