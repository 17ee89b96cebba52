// Package clock is the time source services are given instead of calling the time package:
// the real clock in production, a Fake in tests, which move time forward by hand so that a
// test of a window or a timer (a probe's deadline, a lease's renewal, a receipt's wait)
// runs in microseconds and cannot flake on a slow machine.
//
// Contexts' deadlines and net.Conn deadlines stay on the real clock: the runtime and the
// kernel keep them. Code that must abort I/O now sets a deadline in the past (Past), not
// "now" by whatever clock it was given.
package clock

import "time"

// Clock tells the time and makes timers. It is safe for concurrent use.
type Clock interface {
	Now() time.Time
	Since(t time.Time) time.Duration
	// After is NewTimer(d).C() for a wait that cannot be stopped early (select with ctx).
	After(d time.Duration) <-chan time.Time
	NewTimer(d time.Duration) Timer
	NewTicker(d time.Duration) Ticker
	// AfterFunc calls f once d has passed. The real clock calls it in its own goroutine,
	// the Fake from Advance.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a one-shot timer (time.Timer's methods, its channel as a method).
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Ticker fires every period until stopped (time.Ticker's methods).
type Ticker interface {
	C() <-chan time.Time
	Stop()
	Reset(d time.Duration)
}

// Past is a deadline long gone: net.Conn.SetDeadline(Past) makes blocked reads and writes
// return at once, whatever clock the caller runs on.
var Past = time.Unix(1, 0)

// Real is the system clock.
func Real() Clock { return realClock{} }

// Or returns c, or the real clock when c is nil: the default of an optional Deps field.
func Or(c Clock) Clock {
	if c == nil {
		return realClock{}
	}
	return c
}

type realClock struct{}

// The only reads of the system clock outside tests are here.
func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) Since(t time.Time) time.Duration        { return time.Since(t) }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (realClock) NewTimer(d time.Duration) Timer         { return realTimer{time.NewTimer(d)} }
func (realClock) NewTicker(d time.Duration) Ticker       { return realTicker{time.NewTicker(d)} }
func (realClock) AfterFunc(d time.Duration, f func()) Timer {
	return realTimer{time.AfterFunc(d, f)}
}

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time   { return r.t.C }
func (r realTicker) Stop()                 { r.t.Stop() }
func (r realTicker) Reset(d time.Duration) { r.t.Reset(d) }
