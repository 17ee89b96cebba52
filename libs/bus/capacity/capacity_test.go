package capacity_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/bus/capacity"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// TestFullStreamRaisesEvent fills small streams of the hub's topology — CMDB, which refuses
// at its limit, and RESULTS, which evicts — and a bucket created without limits: the watch
// raises near and full once each (not again while nothing changed), saying what the
// discard policy now does, on event.hub.bus; the refused publish itself names the full
// stream (bus.ErrStoreFull) instead of a bare server error.
func TestFullStreamRaisesEvent(t *testing.T) {
	ctx := context.Background()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "capacity-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("capacity-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	lim := bus.DefaultLimits()
	lim.CMDBMaxBytes, lim.ResultsMaxBytes = 64<<10, 64<<10
	if err := bus.Provision(ctx, js, bus.DefaultTopology(lim)); err != nil {
		t.Fatal(err)
	}
	// a bucket someone made without a limit
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "undeclared"}); err != nil {
		t.Fatal(err)
	}
	events := make(chan envelope.Event, 64)
	sub, err := nc.Subscribe(bus.EventSubject(bus.OriginHub, capacity.Source), func(m *nats.Msg) {
		var ev envelope.Event
		if err := json.Unmarshal(m.Data, &ev); err == nil {
			events <- ev
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	w, err := capacity.New(capacity.DefaultConfig(), capacity.Deps{JS: js})
	if err != nil {
		t.Fatal(err)
	}
	got := func(want ...string) {
		t.Helper()
		found := map[string]bool{}
		for _, f := range w.Check(ctx) {
			found[f.Store+" "+f.Level] = true
		}
		for _, k := range want {
			if !found[k] {
				t.Fatalf("check raised %v, want %v", found, want)
			}
		}
		if len(found) != len(want) {
			t.Fatalf("check raised %v, want only %v", found, want)
		}
	}
	got("KV_undeclared unbounded")
	got() // raised once

	pub := bus.NewPublisher(js, "test", nil)
	body := strings.Repeat("x", 900)
	fill := func(subject string, n int) (refused error) {
		for i := range n {
			_, err := pub.Publish(ctx, subject, envelope.Meta{ID: fmt.Sprintf("%s-%d", subject, i)},
				&envelope.Event{ID: fmt.Sprintf("e%d", i), Site: "s", Source: "t", Type: "fill", Message: body, Time: time.Unix(0, 0)})
			if err != nil {
				return err
			}
		}
		return nil
	}
	// 80 %: near
	if err := fill(bus.CMDBIngestSubject(0), 48); err != nil {
		t.Fatalf("below the limit: %v", err)
	}
	got("CMDB near")
	// up to the limit: the next write is refused, and says so
	refused := fill(bus.CMDBIngestSubject(1), 200)
	if refused == nil {
		t.Fatal("a full DiscardNew stream took every write")
	}
	if !bus.IsStoreFull(refused) || !strings.Contains(refused.Error(), "CMDB") {
		t.Fatalf("refused write: %v; want bus.ErrStoreFull naming the stream", refused)
	}
	got("CMDB full")
	// RESULTS evicts the oldest instead: still raised
	if err := fill(bus.ResultSubject("discovery", "s", "tcp_scan", "a"), 200); err != nil {
		t.Fatalf("a DiscardOld stream refused: %v", err)
	}
	got("RESULTS full")
	got()

	want := map[string]string{"KV_undeclared": capacity.TypeUnbounded, "CMDB": capacity.TypeFull, "RESULTS": capacity.TypeFull}
	texts := map[string]string{"KV_undeclared": "no limit", "CMDB": "new writes are refused", "RESULTS": "oldest messages are evicted"}
	seen := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for len(seen) < len(want) {
		select {
		case ev := <-events:
			if ev.Type == capacity.TypeNearLimit {
				continue
			}
			if want[ev.Resource] != ev.Type || !strings.Contains(ev.Message, texts[ev.Resource]) {
				t.Fatalf("event %s on %s: %q", ev.Type, ev.Resource, ev.Message)
			}
			seen[ev.Resource] = true
		case <-deadline:
			t.Fatalf("events seen for %v, want %v", seen, want)
		}
	}
}
