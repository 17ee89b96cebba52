package outbox

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
)

// directHub is a hub for Send: RESULTS on result.test.>, NOACK on result.noack.> (stores
// and never acknowledges: an ack lost after the hub stored the result), nothing on
// result.none.> (no responders: the hub's stream is not there).
type directHub struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	results jetstream.Stream
	noack   jetstream.Stream
}

func newDirectHub(t *testing.T, ctx context.Context) *directHub {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "hub", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("bridge")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	h := &directHub{nc: nc}
	h.js, _ = jetstream.New(nc)
	if h.results, err = h.js.CreateStream(ctx, jetstream.StreamConfig{Name: "RESULTS", Subjects: []string{"result.test.>"}}); err != nil {
		t.Fatal(err)
	}
	if h.noack, err = h.js.CreateStream(ctx, jetstream.StreamConfig{Name: "NOACK", Subjects: []string{"result.noack.>"}, NoAck: true}); err != nil {
		t.Fatal(err)
	}
	return h
}

func openDirect(t *testing.T, ctx context.Context, clk clock.Clock, sent func(string)) *Outbox {
	t.Helper()
	// The timeout only matters where no ack ever comes; elsewhere it must never pass on a
	// loaded machine, so those cases' hub acks are not raced against it.
	o, err := Open(ctx, Config{Dir: t.TempDir(), MaxBytes: 1 << 20, Clock: clk, Logger: slog.New(slog.DiscardHandler),
		DirectTimeout: 500 * time.Millisecond, Sent: sent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	return o
}

func msgID(id string) nats.Header { return nats.Header{nats.MsgIdHdr: []string{id}} }

// storedAtHub waits until st holds want messages: a stream that does not ack stores what it
// got in its own time. It fails with what st holds.
func storedAtHub(t *testing.T, st jetstream.Stream, want uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := msgs(t, st)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hub's stream has %d results, want %d", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSendRoutes: where Send puts a result — straight to the hub or into the outbox — by
// route, backlog and connection, and that nothing is ever in neither place nor in both
// (a direct send whose ack was lost is at the hub and in the outbox: the hub drops the
// second copy by its id, TestDirectAckLostThenForwarded).
func TestSendRoutes(t *testing.T) {
	cases := []struct {
		name    string
		route   Route
		backlog bool   // one result waits in the outbox already
		conn    string // "up", "closed", "none"
		subject string
		// want: sent directly; results at the hub on the subject's stream; direct failures
		direct   bool
		atHub    uint64
		failures int64
	}{
		{"idle outbox, connected: direct", DirectWhenIdle, false, "up", "result.test.dc1.echo", true, 1, 0},
		{"backlog: stored behind it", DirectWhenIdle, true, "up", "result.test.dc1.echo", false, 0, 0},
		{"backlog, direct first: direct", DirectFirst, true, "up", "result.test.dc1.echo", true, 1, 0},
		{"via the outbox: stored", ViaOutbox, false, "up", "result.test.dc1.echo", false, 0, 0},
		{"connection closed: stored without trying", DirectFirst, false, "closed", "result.test.dc1.echo", false, 0, 0},
		{"no hub connection: stored", DirectWhenIdle, false, "none", "result.test.dc1.echo", false, 0, 0},
		{"hub's stream missing (no responders): stored", DirectWhenIdle, false, "up", "result.none.dc1.echo", false, 0, 1},
		{"ack lost: stored, and the hub has it too", DirectWhenIdle, false, "up", "result.noack.dc1.echo", false, 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			hub := newDirectHub(t, ctx)
			o := openDirect(t, ctx, nil, nil)
			var pending int64
			if tc.backlog {
				if err := o.Put(ctx, "result.test.dc1.echo", msgID("waiting"), []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
				pending = 1
			}
			conn := hub.nc
			switch tc.conn {
			case "closed":
				conn.Close()
			case "none":
				conn = nil
			}
			direct, err := o.Send(ctx, conn, tc.route, tc.subject, msgID("r-1"), []byte(`{"n":1}`))
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			stored := int64(0)
			if !direct {
				stored = 1
			}
			if direct != tc.direct || o.SentDirect() != 1-stored || o.Stored() != stored || o.DirectFailures() != tc.failures {
				t.Fatalf("direct %v (want %v), counters direct %d stored %d failures %d (want failures %d)",
					direct, tc.direct, o.SentDirect(), o.Stored(), o.DirectFailures(), tc.failures)
			}
			if got := o.Pending(); got != pending+stored {
				t.Fatalf("outbox holds %d results, want %d", got, pending+stored)
			}
			st := hub.results
			if tc.subject == "result.noack.dc1.echo" {
				st = hub.noack
			}
			if tc.conn == "up" {
				storedAtHub(t, st, tc.atHub)
			}
		})
	}
}

// TestDirectPause: after a direct send failed, results go to the outbox without trying for
// DirectPause (a hub that does not ack costs one timeout, not one per result), then are
// tried again. DirectFirst, so that the outbox's backlog (the failed results) is no reason.
func TestDirectPause(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hub := newDirectHub(t, ctx)
	fake := clock.NewFake(time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC))
	o := openDirect(t, ctx, fake, nil)
	var tried atomic.Int64 // publishes the hub saw on result.noack.>
	sub, err := hub.nc.Subscribe("result.noack.>", func(*nats.Msg) { tried.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := hub.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	send := func(id string) bool {
		t.Helper()
		direct, err := o.Send(ctx, hub.nc, DirectFirst, "result.noack.dc1.echo", msgID(id), []byte(`{}`))
		if err != nil {
			t.Fatalf("send %s: %v", id, err)
		}
		return direct
	}
	if send("r-1") || o.DirectFailures() != 1 {
		t.Fatalf("first send: want a failed direct try (ack lost), failures %d", o.DirectFailures())
	}
	fake.Advance(DirectPause - time.Nanosecond)
	if send("r-2") || o.DirectFailures() != 1 {
		t.Fatalf("within the pause: want stored without a try, failures %d", o.DirectFailures())
	}
	fake.Advance(time.Nanosecond)
	if send("r-3") || o.DirectFailures() != 2 {
		t.Fatalf("after the pause: want a direct try again, failures %d", o.DirectFailures())
	}
	// The subscriber saw the tries: r-1 and r-3, not r-2.
	if err := hub.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := tried.Load(); n != 2 {
		t.Fatalf("the hub saw %d direct publishes, want 2 (none within the pause)", n)
	}
	if o.Stored() != 3 || o.Pending() != 3 {
		t.Fatalf("stored %d, pending %d: want all 3 in the outbox", o.Stored(), o.Pending())
	}
}

// TestDirectAckLostThenForwarded: a direct send the hub stored but whose ack was lost goes
// to the outbox too; the forwarder sends it again once the hub acks, the hub keeps one copy
// (same Nats-Msg-Id within its duplicate window), and the bridge is told it arrived.
func TestDirectAckLostThenForwarded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	hub := newDirectHub(t, ctx)
	var mu sync.Mutex
	sent := map[string]int{}
	o := openDirect(t, ctx, nil, func(id string) { mu.Lock(); sent[id]++; mu.Unlock() })
	direct, err := o.Send(ctx, hub.nc, DirectWhenIdle, "result.noack.dc1.echo", msgID("r-1"), []byte(`{}`))
	if err != nil || direct {
		t.Fatalf("send: direct %v, err %v; want stored after the lost ack", direct, err)
	}
	storedAtHub(t, hub.noack, 1)
	// The hub acks again (a new stream leader).
	cfg := hub.noack.CachedInfo().Config
	cfg.NoAck = false
	if _, err := hub.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = o.Forward(fctx, hub.js); close(done) }()
	defer func() { stop(); <-done }()
	for {
		mu.Lock()
		n := sent["r-1"]
		mu.Unlock()
		if n > 0 && o.Pending() == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the stored copy was never acknowledged: told %d times, %d pending", n, o.Pending())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := msgs(t, hub.noack); n != 1 {
		t.Fatalf("the hub has %d copies of r-1, want 1 (deduplicated by its id)", n)
	}
}
