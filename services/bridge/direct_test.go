package bridge

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/bridge/outbox"
)

// generousDirect is a direct-send timeout no hub ack reaches on a loaded machine: tests that
// expect direct sends must not see one fall back because the machine was slow.
const generousDirect = 30 * time.Second

// lostAckDirect is the direct-send timeout of tests where the hub never acks (NoAck): any
// value works, a short one keeps them short.
const lostAckDirect = 300 * time.Millisecond

// setNoAck makes the rig's RESULTS store results without acknowledging them (an ack lost
// after the hub stored the result: a stream leader change), or acknowledge them again.
func (r *hubRig) setNoAck(on bool) {
	r.t.Helper()
	info, err := r.results.Info(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	cfg := info.Config
	cfg.NoAck = on
	if _, err := r.js.UpdateStream(r.ctx, cfg); err != nil {
		r.t.Fatalf("RESULTS NoAck=%v: %v", on, err)
	}
}

// counters is a bridge's result counters, for failure messages.
func counters(b *Bridge) string {
	return fmt.Sprintf("direct %d, stored %d, direct failures %d, outbox pending %d",
		b.box.SentDirect(), b.box.Stored(), b.box.DirectFailures(), b.box.Pending())
}

// TestResultsGoDirectWhenConnected: with the hub connected and nothing waiting, results go
// straight to the hub — here the bridge has no forwarder at all, so a result that went to
// the outbox would never arrive — and each probe is acked once its result is there.
func TestResultsGoDirectWhenConnected(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := newHubRig(t, ctx, "127.77.250.40")
	p := startBridgeWith(t, r, t.TempDir(), "br-1", rigOpts{forward: false, ack: true, direct: true, directTimeout: generousDirect})
	const n = 3
	for i := range n {
		r.publish("direct-" + strconv.Itoa(i))
	}
	within(t, 60*time.Second, "every probe acked", func() bool { return r.queued() == 0 })
	if b := p.b; b.box.SentDirect() != n || b.box.Stored() != 0 || b.box.Pending() != 0 {
		t.Fatalf("want %d results sent directly, none stored: %s", n, counters(b))
	}
	res := r.resultsOf()
	if len(res) != n {
		t.Fatalf("the hub has %d results, want %d: %+v", len(res), n, res)
	}
	for _, x := range res {
		if !x.Final || x.Status != envelope.StatusOK {
			t.Fatalf("result %+v, want a final ok", x)
		}
	}
	if got, err := p.b.box.Executed().Len(ctx); err != nil || got != n {
		t.Fatalf("executed-probe store holds %d records (%v), want %d: a redelivery would run them again", got, err, n)
	}
}

// TestResultsFallBackToTheOutbox: when a result cannot go straight to the hub it goes to the
// outbox and arrives later through the forwarder; none is lost, none is at the hub twice
// (a direct send the hub stored without acking and its forwarded copy share a Nats-Msg-Id),
// the probe is acked, and it ran once.
func TestResultsFallBackToTheOutbox(t *testing.T) {
	cases := []struct {
		name string
		// before runs after the bridge started and before the probe is published;
		// after once the bridge stored the result (the hub then acks again).
		before, after func(r *hubRig, p *bridgeProc)
		failures      int64
	}{
		{"hub connection down", func(r *hubRig, p *bridgeProc) { p.b.nc.Close() }, func(*hubRig, *bridgeProc) {}, 0},
		{"hub stores the result but its ack is lost", func(r *hubRig, _ *bridgeProc) { r.setNoAck(true) },
			func(r *hubRig, _ *bridgeProc) { r.setNoAck(false) }, 1},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			r := newHubRig(t, ctx, "127.77.250."+strconv.Itoa(41+i))
			p := startBridgeWith(t, r, t.TempDir(), "br-1", rigOpts{forward: true, ack: true, direct: true, directTimeout: lostAckDirect})
			tc.before(r, p)
			r.publish("fallback-1")
			within(t, 60*time.Second, "result stored in the outbox", func() bool { return p.b.box.Stored() == 1 })
			tc.after(r, p)
			// The forwarder's ack timeout (outbox.AckTimeout) may pass once before the hub acks.
			within(t, 90*time.Second, "probe acked", func() bool { return r.queued() == 0 })
			if b := p.b; b.box.SentDirect() != 0 || b.box.Stored() != 1 || b.box.DirectFailures() != tc.failures {
				t.Fatalf("want one stored result and %d direct failures: %s", tc.failures, counters(b))
			}
			within(t, 30*time.Second, "outbox drained", func() bool { return p.b.box.Pending() == 0 })
			res := r.resultsOf()
			if len(res) != 1 || res[0].ID != ResultID("fallback-1", 1, 0) || !res[0].Final {
				t.Fatalf("hub results %+v, want the one final result", res)
			}
			if n := r.hits.Load(); n != 1 {
				t.Fatalf("the target counted %d executions, want 1", n)
			}
		})
	}
}

// TestCrashBetweenDirectSendAndProbeAck: the hub stored a direct send but the bridge never
// learnt it (ack lost), and the bridge dies before the probe's ack; the probe comes back to
// the next process over the same data dir, which answers it from the executed-probe store:
// the target saw one execution and the hub keeps one result.
func TestCrashBetweenDirectSendAndProbeAck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	r := newHubRig(t, ctx, "127.77.250.45")
	dir := t.TempDir()
	r.setNoAck(true)
	first := startBridgeWith(t, r, dir, "br-1", rigOpts{forward: false, ack: true, direct: true, directTimeout: lostAckDirect})
	r.publish("crash-1")
	within(t, 60*time.Second, "direct send tried, result stored", func() bool {
		return first.b.box.DirectFailures() == 1 && first.b.box.Stored() == 1
	})
	// The hub stored the direct send (it only did not ack it).
	within(t, 30*time.Second, "direct send stored at the hub", func() bool { return len(r.resultsOf()) == 1 })
	first.stop() // the crash
	if q := r.queued(); q != 1 {
		t.Fatalf("the probe left the queue without its ack (%d queued)", q)
	}
	r.setNoAck(false)
	next := startBridgeWith(t, r, dir, "br-1", rigOpts{forward: true, ack: true, direct: true, directTimeout: generousDirect})
	within(t, 60*time.Second, "probe acked", func() bool { return r.queued() == 0 })
	within(t, 60*time.Second, "outbox drained", func() bool { return next.b.box.Pending() == 0 })
	if next.b.replayed.Load() == 0 {
		t.Error("the redelivery was not answered from the executed-probe store")
	}
	if n := r.hits.Load(); n != 1 {
		t.Fatalf("the target counted %d executions, want 1", n)
	}
	res := r.resultsOf()
	if len(res) != 1 || res[0].ID != ResultID("crash-1", 1, 0) || res[0].Attempt != 1 {
		t.Fatalf("hub results %+v, want the one final result of attempt 1", res)
	}
}

// TestClaimRoute: a probe's results try the hub directly (interactive ones even behind a
// backlog) until one of them went to the outbox; the rest follow it there, in order.
func TestClaimRoute(t *testing.T) {
	cases := []struct {
		name        string
		c           *claim
		want, after outbox.Route
	}{
		{"no claim", nil, outbox.ViaOutbox, outbox.ViaOutbox},
		{"standard", &claim{}, outbox.DirectWhenIdle, outbox.ViaOutbox},
		{"interactive", &claim{interactive: true}, outbox.DirectFirst, outbox.ViaOutbox},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.c.route(); got != tc.want {
				t.Fatalf("route %v, want %v", got, tc.want)
			}
			if tc.c != nil {
				tc.c.stored.Store(true)
			}
			if got := tc.c.route(); got != tc.after {
				t.Fatalf("after a stored result: route %v, want %v", got, tc.after)
			}
		})
	}
}

// TestWorkersDoNotWaitForTheHubsAck: a probe's worker goes back to its pool once the probe ran
// and its result is recorded; the result's direct send goes on waiting for the hub's ack, at
// most sendSlots of them at once, after which workers wait for their own sends again. The
// probes stay unacked until the hub has their results, and nothing is lost or duplicated
// when the waiting sends fail over to the outbox.
func TestWorkersDoNotWaitForTheHubsAck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	r := newHubRig(t, ctx, "127.77.250.46")
	// The hub stores results and never acks them: every direct send waits its whole timeout,
	// far beyond this test.
	r.setNoAck(true)
	const pool, sends, probes = 4, 2, 10
	p := startBridgeWith(t, r, t.TempDir(), "br-1", rigOpts{forward: true, ack: true, direct: true,
		directTimeout: 10 * time.Minute, sendSlots: sends})
	// Runs before the bridge's stop (which waits for the sends): a failing test ends at once.
	t.Cleanup(func() { p.b.nc.Close() })
	if got := cap(p.b.pools[envelope.PriorityStandard].slots); got != pool {
		t.Fatalf("the rig's standard pool has %d workers, the test expects %d", got, pool)
	}
	for i := range probes {
		r.publish("slots-" + strconv.Itoa(i))
	}
	// sends results wait without a worker, pool more wait with theirs: the rest wait for a
	// worker, unexecuted.
	within(t, 60*time.Second, "pool+sends probes executed", func() bool { return r.hits.Load() == pool+sends })
	within(t, 30*time.Second, "their results stored at the hub", func() bool { return len(r.resultsOf()) == pool+sends })
	time.Sleep(500 * time.Millisecond) // a probe beyond the bound would have run by now
	if n := r.hits.Load(); n != pool+sends {
		t.Fatalf("%d probes executed with %d workers and %d sends in flight, want %d: %s", n, pool, sends, pool+sends, counters(p.b))
	}
	if q := r.queued(); q != probes {
		t.Fatalf("%d probes queued, want all %d (none acked before the hub acked its result)", q, probes)
	}
	// The connection to the hub drops: the waiting sends go to the outbox, the forwarder sends
	// them (the hub acks again), the remaining probes run.
	r.setNoAck(false)
	p.b.nc.Close()
	within(t, 120*time.Second, "every probe acked", func() bool { return r.queued() == 0 })
	within(t, 30*time.Second, "outbox drained", func() bool { return p.b.box.Pending() == 0 })
	if n := r.hits.Load(); n != probes {
		t.Fatalf("the target counted %d executions, want %d: %s", n, probes, counters(p.b))
	}
	res := r.resultsOf()
	seen := map[string]bool{}
	for _, x := range res {
		if seen[x.ID] {
			t.Fatalf("result %s at the hub twice: %+v", x.ID, res)
		}
		seen[x.ID] = true
	}
	if len(seen) != probes {
		t.Fatalf("the hub has %d results, want %d: %s", len(seen), probes, counters(p.b))
	}
}
