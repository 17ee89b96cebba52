package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/banner"
	"github.com/outpost-dev/outpost/libs/probes/tcpscan"
)

// A bridge holding scanHold scans hands a further scan chunk back to the consumer (a Nak
// with a delay, redelivered to whoever pulls next) and keeps every other probe, tcp or
// not; once one of its scans is done it keeps the next chunk it gets. Real JetStream.
func TestScanChunksBeyondTheHoldGoBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "scanshare-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("scanshare-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "P", Subjects: []string{"probe.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "P", jetstream.ConsumerConfig{Durable: "site", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 15 * time.Second, MaxDeliver: 20})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(id, kind, capability string, within ...time.Duration) {
		deadline := time.Now().Add(time.Minute)
		if len(within) > 0 {
			deadline = time.Now().Add(within[0])
		}
		p := &envelope.Probe{ID: id, Run: "run-1", App: "discovery", Site: "lab", Priority: envelope.PriorityStandard,
			Kind: kind, Capability: capability, Target: "127.77.117.0/28", Deadline: deadline}
		h, data, err := envelope.Encode(envelope.Meta{Source: "/services/test"}, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: bus.ProbeSubject("lab", "standard", capability, "discovery"), Header: h, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	next := func() (jetstream.Msg, string) {
		t.Helper()
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			_, p, err := envelope.DecodeInto[*envelope.Probe](m.Headers(), m.Data())
			if err != nil {
				t.Fatal(err)
			}
			return m, p.ID
		}
		t.Fatal("no probe delivered within 10 s")
		return nil, ""
	}
	for i := 1; i <= 3; i++ {
		publish(fmt.Sprintf("scan-%d", i), tcpscan.Kind, tcpscan.Capability)
	}
	publish("banner-1", banner.Kind, banner.Capability)
	publish("scan-late", tcpscan.Kind, tcpscan.Capability, 5*time.Second) // too near its deadline to bounce

	b := &Bridge{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var dones []func()
	for _, want := range []struct {
		id   string
		back bool
	}{{"scan-1", false}, {"scan-2", false}, {"scan-3", true}, {"banner-1", false}, {"scan-late", false}} {
		m, id := next()
		if id != want.id {
			t.Fatalf("delivered %s, want %s", id, want.id)
		}
		done, back := b.shareScan(m, bus.ProbeCapability(m.Subject()))
		if back != want.back {
			t.Fatalf("%s handed back %v, want %v (scans held %d)", id, back, want.back, b.scans.held.Load())
		}
		if !back {
			dones = append(dones, done)
		}
	}
	if n := b.scans.held.Load(); n != 3 {
		t.Fatalf("%d scans held, want 3 (two, and the one kept near its deadline)", n)
	}
	dones[0]()            // scan-1 done
	dones[len(dones)-1]() // scan-late done: the bridge can take a chunk again
	m, id := next()       // scan-3 again, after the hand-back delay
	md, _ := m.Metadata()
	if id != "scan-3" || md.NumDelivered != 2 {
		t.Fatalf("delivered %s (delivery %d), want scan-3's second delivery", id, md.NumDelivered)
	}
	if _, back := b.shareScan(m, bus.ProbeCapability(m.Subject())); back {
		t.Fatal("scan-3 handed back again though the bridge holds only one scan")
	}
	if n := b.scans.handedBack.Load(); n != 1 {
		t.Errorf("%d chunks handed back, want 1", n)
	}
}

// The hand-back delay stays short for the first deliveries (an idle sibling takes the chunk
// soon) and then grows, so that a chunk waits about two and a half minutes for a free bridge
// before one keeps it, not 24 s.
func TestHandBackDelay(t *testing.T) {
	for _, c := range []struct {
		delivery uint64
		want     time.Duration
	}{{1, 2 * time.Second}, {4, 2 * time.Second}, {5, 4 * time.Second}, {6, 8 * time.Second}, {7, 16 * time.Second},
		{8, 30 * time.Second}, {11, 30 * time.Second}, {40, 30 * time.Second}} {
		if got := handBackDelay(c.delivery); got != c.want {
			t.Errorf("handBackDelay(%d) = %v, want %v", c.delivery, got, c.want)
		}
	}
	var window time.Duration
	for d := uint64(1); d < scanHandBacks; d++ {
		window += handBackDelay(d)
	}
	if window < 2*time.Minute || window > 5*time.Minute {
		t.Errorf("a chunk is handed back for %v in all; want 2 to 5 minutes (well inside a chunk's 10-minute deadline)", window)
	}
}
