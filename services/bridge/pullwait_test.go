package bridge

import (
	"context"
	"reflect"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
)

// sendingFlag is the pull iterator's "a pull request is being sent" flag
// (pullSubscription.fetchInProgress in nats.go v1.55.0), which the iterator's own sending
// goroutine sets and clears. The test sets it to play a sending goroutine that has sent its
// request and not yet cleared the flag; a nats.go that no longer has it fails the test with
// what to check.
func sendingFlag(t *testing.T, it jetstream.MessagesContext) *atomic.Uint32 {
	t.Helper()
	v := reflect.ValueOf(it)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	var f reflect.Value
	if v.Kind() == reflect.Struct {
		f = v.FieldByName("fetchInProgress")
	}
	if !f.IsValid() || f.Type() != reflect.TypeFor[atomic.Uint32]() {
		t.Fatalf("nats.go's pull iterator (%T) has no fetchInProgress flag any more: check whether its Next still skips "+
			"the decision to pull while a pull request is being sent (see probeWaiter), then update probeWaiter and this test", it)
	}
	return (*atomic.Uint32)(unsafe.Pointer(f.UnsafeAddr()))
}

// catchUp is a pull iterator whose sending goroutine clears its flag only once Next has
// been called `after` times: the real iterator does the work, catchUp only decides when
// that goroutine catches up.
type catchUp struct {
	jetstream.MessagesContext
	flag  *atomic.Uint32
	after int
	calls int
}

func (c *catchUp) Next(opts ...jetstream.NextOpt) (jetstream.Msg, error) {
	c.calls++
	if c.calls > c.after {
		c.flag.Store(0)
	}
	return c.MessagesContext.Next(opts...)
}

// TestProbeWaiterPullsAfterASkippedDecision: the interleaving that stood the echo bench still
// for ~30 s, played step by step against a real server and nats.go's real iterator. A pull's
// messages all arrive and are taken while its sending goroutine has not yet cleared its flag,
// so Next skips its decision to pull again; the next Next starts with the flag still set,
// finds nothing buffered, and would wait for the missed-heartbeat timer (60 s here). The
// probe waiter must get the probe published meanwhile within one short wait and a round trip.
func TestProbeWaiterPullsAfterASkippedDecision(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "hub", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "W", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(subject string) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, []byte(subject)); err != nil {
			t.Fatal(err)
		}
	}
	// Prefetch 4 (a new pull below 2 pending); heartbeats 30 s apart (the most nats.go
	// allows): a missed one ends a wait after 60 s, beyond the waiter's 45 s here.
	it, err := cons.Messages(jetstream.PullMaxMessages(4), jetstream.PullExpiry(10*time.Minute), jetstream.PullHeartbeat(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	flag := sendingFlag(t, it)
	for _, s := range []string{"w.1", "w.2", "w.3", "w.4"} {
		publish(s)
	}
	take := func(want string) {
		t.Helper()
		m, err := it.Next(jetstream.NextMaxWait(30 * time.Second))
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		if m.Subject() != want {
			t.Fatalf("got %s, want %s", m.Subject(), want)
		}
		_ = m.Ack()
	}
	// The first Next pulls 4. Once its sending goroutine cleared its flag, the test sets it
	// again: from here, "that pull is still being sent".
	take("w.1")
	within(t, 30*time.Second, "the first pull sent", func() bool { return flag.Load() == 0 })
	flag.Store(1)
	// The other three come in: the Next before the last sees 1 pending (below 2) and skips
	// its pull, so nothing is requested and nothing buffered now.
	take("w.2")
	take("w.3")
	take("w.4")
	publish("w.5")
	// The waiter's first Next starts with the flag set (it skips its decision too); the
	// sending goroutine catches up before the second.
	w := probeWaiter{}
	wctx, wcancel := context.WithTimeout(ctx, 45*time.Second)
	defer wcancel()
	m, err := w.next(wctx, &catchUp{MessagesContext: it, flag: flag, after: 1})
	if err != nil {
		info, _ := cons.Info(ctx)
		var waiting, pending int
		if info != nil {
			waiting, pending = info.NumWaiting, int(info.NumPending)
		}
		t.Fatalf("no probe from the waiter (%v): the consumer has %d pending and %d pull requests waiting — the iterator did not pull again", err, pending, waiting)
	}
	if m.Subject() != "w.5" {
		t.Fatalf("got %s, want w.5", m.Subject())
	}
	if w.quiet != 0 {
		t.Fatalf("the waiter counts %d short waits after a probe, want 0", w.quiet)
	}
}
