package clock_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/clock"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// TestFakeTimeline: timers, tickers and AfterFuncs fire from Advance at their own due
// times, in order, and only then.
func TestFakeTimeline(t *testing.T) {
	f := clock.NewFake(t0)
	var fired []string
	at := func(name string) func() {
		return func() { fired = append(fired, fmt.Sprintf("%s@%s", name, f.Since(t0))) }
	}
	f.AfterFunc(3*time.Second, at("c"))
	f.AfterFunc(time.Second, at("a"))
	f.AfterFunc(time.Second, at("b")) // same due time: creation order
	stopped := f.AfterFunc(2*time.Second, at("stopped"))
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop: want true once, then false")
	}
	steps := []struct {
		advance time.Duration
		want    []string
	}{
		{999 * time.Millisecond, nil},
		{time.Millisecond, []string{"a@1s", "b@1s"}},
		{time.Second, []string{"a@1s", "b@1s"}},
		{5 * time.Second, []string{"a@1s", "b@1s", "c@3s"}},
	}
	for i, s := range steps {
		f.Advance(s.advance)
		if !slices.Equal(fired, s.want) {
			t.Fatalf("step %d (+%s): fired %v, want %v", i, s.advance, fired, s.want)
		}
	}
	if got := f.Since(t0); got != 7*time.Second {
		t.Fatalf("clock at +%s, want +7s", got)
	}
	if f.Waiters() != 0 {
		t.Fatalf("%d waiters left", f.Waiters())
	}
}

func TestFakeTimerAndTicker(t *testing.T) {
	f := clock.NewFake(t0)
	timer := f.NewTimer(2 * time.Second)
	tick := f.NewTicker(time.Second)
	recv := func(c <-chan time.Time) (time.Time, bool) {
		select {
		case v := <-c:
			return v, true
		default:
			return time.Time{}, false
		}
	}
	f.Advance(time.Second)
	if v, ok := recv(tick.C()); !ok || !v.Equal(t0.Add(time.Second)) {
		t.Fatalf("tick at +1s: %v %v", v, ok)
	}
	if _, ok := recv(timer.C()); ok {
		t.Fatal("timer fired before its time")
	}
	// a reader that does not keep up loses ticks; it never gets a backlog
	f.Advance(3 * time.Second)
	if v, ok := recv(tick.C()); !ok || !v.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("first undrained tick: %v %v, want +2s", v, ok)
	}
	if _, ok := recv(tick.C()); ok {
		t.Fatal("ticks piled up")
	}
	if v, ok := recv(timer.C()); !ok || !v.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("timer: %v %v", v, ok)
	}
	if timer.Reset(time.Second) {
		t.Fatal("Reset of a fired timer reports it was active")
	}
	tick.Reset(10 * time.Second)
	f.Advance(time.Second)
	if _, ok := recv(timer.C()); !ok {
		t.Fatal("reset timer did not fire")
	}
	if _, ok := recv(tick.C()); ok {
		t.Fatal("ticker fired at its old period after Reset")
	}
	tick.Stop()
	f.Advance(time.Minute)
	if _, ok := recv(tick.C()); ok {
		t.Fatal("stopped ticker fired")
	}
	f.Set(t0) // never backwards
	if f.Now().Before(t0.Add(time.Minute)) {
		t.Fatalf("Set went backwards: %s", f.Now())
	}
}

// TestFakeBlockUntil: a test waits for the goroutine under test to arm its timer before it
// moves time, instead of sleeping.
func TestFakeBlockUntil(t *testing.T) {
	f := clock.NewFake(t0)
	done := make(chan time.Time)
	go func() { done <- <-f.After(time.Hour) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !f.BlockUntil(ctx, 1) {
		t.Fatal("the goroutine never waited")
	}
	f.Advance(time.Hour)
	if v := <-done; !v.Equal(t0.Add(time.Hour)) {
		t.Fatalf("After gave %s", v)
	}
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if f.BlockUntil(short, 5) {
		t.Fatal("BlockUntil reported 5 waiters that do not exist")
	}
}

func TestOr(t *testing.T) {
	f := clock.NewFake(t0)
	if clock.Or(f) != clock.Clock(f) {
		t.Fatal("Or replaced a given clock")
	}
	if c := clock.Or(nil); c == nil || c.Now().Year() < 2025 {
		t.Fatal("Or(nil) is not the real clock")
	}
}
