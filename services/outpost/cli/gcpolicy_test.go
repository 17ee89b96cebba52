package cli

import (
	"context"
	"runtime/debug"
	"testing"
	"time"
)

// TestGCPolicy: the heap may grow by the headroom (48 MB), within 50 % and 100 % of the live
// heap.
func TestGCPolicy(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, 100},       // nothing measured yet
		{10 * mb, 100}, // 48 MB would be 480 %: Go's default at most
		{48 * mb, 100}, // the headroom is the live heap
		{60 * mb, 80},  // the echo bench's hub
		{96 * mb, 50},  // the headroom is half the live heap
		{300 * mb, 50}, // a large discovery: 50 %, as before
		{1 << 40, 50},  // no overflow
	} {
		if got := hubGC.percent(tc.live); got != tc.want {
			t.Errorf("live heap %d MB: GOGC %d, want %d", tc.live/mb, got, tc.want)
		}
	}
}

// TestGCPolicyRun: the loop applies the policy (a headroom far above this process's live
// heap: the largest growth) and stops with its context.
func TestGCPolicyRun(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	p := gcPolicy{headroom: 1 << 40, min: 61, max: 137} // values nobody else sets
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.run(ctx, 10*time.Millisecond) }()
	// current reads GOGC without changing it (SetGCPercent returns the previous value).
	current := func() int { v := debug.SetGCPercent(-1); debug.SetGCPercent(v); return v }
	deadline := time.Now().Add(time.Minute)
	for current() != p.max {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is %d a minute after the policy started, want %d", current(), p.max)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the policy loop did not stop with its context")
	}
}
