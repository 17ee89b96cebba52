package bridge

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/bridge/probe"
)

var t0 = time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)

// workQueue is a real JetStream work queue holding one probe message, and the acks the
// server receives for it ("+WPI" for in progress, "+ACK", "-NAK"…), seen on $JS.ACK.
type workQueue struct {
	jm   jetstream.Msg
	mu   sync.Mutex
	acks []string
}

func newWorkQueue(t *testing.T, ctx context.Context) *workQueue {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "work-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("work-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	spy, err := srv.Connect("ack-spy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(spy.Close)
	q := &workQueue{}
	if _, err := spy.Subscribe("$JS.ACK.>", func(m *nats.Msg) {
		q.mu.Lock()
		q.acks = append(q.acks, string(m.Data))
		q.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "W", jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "w.probe", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		q.jm = m
	}
	if q.jm == nil {
		t.Fatal("no message fetched")
	}
	return q
}

// inProgress waits until the server has seen exactly want in-progress acks.
func (q *workQueue) inProgress(t *testing.T, want int) {
	t.Helper()
	eventually(t, 5*time.Second, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		n := 0
		for _, a := range q.acks {
			if a == "+WPI" {
				n++
			}
		}
		if n > want {
			t.Fatalf("%d in-progress acks, want %d (%v)", n, want, q.acks)
		}
		return n == want
	})
}

func eventually(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKeepAliveTimeline: a probe being worked on tells the hub so every keepAliveEvery —
// at those instants and no others — until it stops.
func TestKeepAliveTimeline(t *testing.T) {
	ctx := context.Background()
	q := newWorkQueue(t, ctx)
	fake := clock.NewFake(t0)
	stop := keepAlive(fake, q.jm)
	steps := []struct {
		advance time.Duration
		want    int
	}{
		{keepAliveEvery - time.Nanosecond, 0},
		{time.Nanosecond, 1},
		{keepAliveEvery - time.Nanosecond, 1},
		{time.Nanosecond, 2},
		{3 * keepAliveEvery, 5},
	}
	for _, s := range steps {
		fake.Advance(s.advance)
		q.inProgress(t, s.want)
	}
	stop()
	fake.Advance(time.Hour)
	_ = q.jm.Ack() // a marker: every ack sent before it has arrived once it has
	eventually(t, 5*time.Second, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.acks) > 0 && q.acks[len(q.acks)-1] == "+ACK"
	})
	q.inProgress(t, 5)
	if fake.Waiters() != 0 {
		t.Fatalf("%d timers left after stop", fake.Waiters())
	}
}

// TestAcquireKeepsTheProbe: a probe waiting for a free worker is kept alive at the hub until
// a worker frees up, then taken.
func TestAcquireKeepsTheProbe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := newWorkQueue(t, ctx)
	fake := clock.NewFake(t0)
	b := &Bridge{clock: fake}
	p := &pool{name: envelope.PriorityStandard, slots: make(chan struct{}, 1)}
	p.slots <- struct{}{} // the only worker is busy
	got := make(chan bool)
	go func() { got <- b.acquire(ctx, p, q.jm) }()
	if !fake.BlockUntil(ctx, 1) {
		t.Fatal("acquire did not wait")
	}
	fake.Advance(2 * keepAliveEvery)
	q.inProgress(t, 2)
	<-p.slots // the worker is done
	if !<-got {
		t.Fatal("acquire gave up")
	}
	if len(p.slots) != 1 {
		t.Fatal("the probe did not take the freed worker")
	}
}

// TestProbePastItsDeadline: a probe whose deadline passed while it waited in the queue is
// answered "timeout" without running, stamped with the bridge's clock — with the code
// expired, not timeout: nothing was sent to the target, so the hub sends it again instead
// of taking the target's silence as its answer.
func TestProbePastItsDeadline(t *testing.T) {
	fake := clock.NewFake(t0)
	b := &Bridge{cfg: Config{Site: "dc1", Name: "br-1"}, clock: fake, log: slog.New(slog.DiscardHandler),
		runners: map[string]probe.Runner{"echo": nil}, kindCap: map[string]string{"echo": "echo"}}
	p := &envelope.Probe{ID: "p1", Run: "r1", App: "discovery", Site: "dc1", Kind: "echo", Capability: "echo", Deadline: t0.Add(time.Second)}
	fake.Advance(time.Second + time.Nanosecond)
	started := fake.Now()
	fake.Advance(time.Millisecond)
	res := b.runProbe(context.Background(), nil, p, "echo", started, 1)
	if len(res) != 1 || res[0].Status != envelope.StatusTimeout || !res[0].Final || res[0].Error == nil || res[0].Error.Code != probe.CodeExpired {
		t.Fatalf("results %+v, want one final timeout with code %q", res, probe.CodeExpired)
	}
	if !res[0].Started.Equal(started) || !res[0].Finished.Equal(started.Add(time.Millisecond)) {
		t.Fatalf("started %s finished %s", res[0].Started, res[0].Finished)
	}
}
