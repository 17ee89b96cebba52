package correlation

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Two replicas share the partitions (each about half), every event of many keys is counted
// once, and when one replica stops, the other takes its partitions and nothing is lost.
func TestReplicasSharePartitionsAndTakeOver(t *testing.T) {
	r := newRig(t)
	var svcs = map[string]*service{}
	mod := func(c *Config) { c.ActiveLease = time.Second; c.Partitions = 8 }
	stopA := r.startSvc("a", mod, svcs)
	r.startSvc("b", mod, svcs)
	eventually(t, 20*time.Second, func() error {
		a, b := svcs["a"].owner.Owned(), svcs["b"].owner.Owned()
		if len(a) != 4 || len(b) != 4 {
			return fmt.Errorf("a owns %v, b owns %v: want 4 each", a, b)
		}
		return nil
	})
	const nodes, per = 40, 25
	sendAll := func() {
		for i := range per {
			for n := range nodes {
				r.send("dc1", "webhook", envelope.Event{Node: fmt.Sprintf("n%02d", n), Severity: "major", Message: fmt.Sprint(i)})
			}
		}
	}
	sendAll()
	want := func(count int64) func() error {
		return func() error {
			as := r.alerts("")
			if len(as) != nodes {
				return fmt.Errorf("%d alerts, want %d", len(as), nodes)
			}
			for _, a := range as {
				if a.Count != count || a.State != api.StateOpen {
					return fmt.Errorf("alert %s: count %d state %s, want %d open", a.Node, a.Count, a.State, count)
				}
			}
			return nil
		}
	}
	eventually(t, 20*time.Second, want(per))
	stopA()
	sendAll()
	eventually(t, 20*time.Second, func() error {
		if b := svcs["b"].owner.Owned(); len(b) != 8 {
			return fmt.Errorf("b owns %v after a stopped, want all 8", b)
		}
		return want(2 * per)()
	})
	if got := svcs["b"].owner.Owned(); !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("b owns %v", got)
	}
}

// An event the router routes a second time is not counted twice, even when the partition
// stream no longer knows its message id: a hub's server restarted after the partition had
// acknowledged the event (interest retention removed it, and the duplicate window is rebuilt
// from the messages still stored) while the events consumer had not yet stored the router's
// acknowledgement — the copy then comes with a new partition sequence.
func TestEventRoutedAgainCountedOnce(t *testing.T) {
	r := newRig(t)
	r.start("a", nil)
	ev := envelope.Event{Node: "again-node", Severity: "major", Message: "disk full"}
	r.send("dc1", "webhook", ev)
	a := r.one("again-node", func(a api.Alert) error {
		if a.Count != 1 {
			return fmt.Errorf("count %d, want 1", a.Count)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := r.js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The router's copy, as it routes the event again: same EVENTS sequence, no message id
	// the partition stream still remembers.
	ev.ID, ev.Site, ev.Source, ev.Type, ev.Time = envelope.NewID(), "dc1", "webhook", "test", t0
	again := routed{EventSeq: info.State.LastSeq, Key: a.Key, Event: &ev}.marshal()
	if _, err := r.js.Publish(ctx, partitionSubjectOf(partitionOf(a.Group, DefaultConfig().Partitions)), again); err != nil {
		t.Fatal(err)
	}
	// A new event behind it in the same partition: once it is counted, the copy was seen.
	r.send("dc1", "webhook", envelope.Event{Node: "again-node", Severity: "major", Message: "disk still full"})
	r.one("again-node", func(a api.Alert) error {
		if a.Message != "disk still full" || a.Count != 2 {
			return fmt.Errorf("count %d message %q, want 2 after the new event (the copy not counted)", a.Count, a.Message)
		}
		return nil
	})
}

// Events of one message (a collector's batch) are each applied, in their order within it:
// several events of one key in one message all count and the last one's fields are the
// alert's; a clear later in the message closes; one bad event is dead-lettered alone
// (named by its index) while the message stays in EVENTS and its other events go on.
func TestBatchedEventsEachApplied(t *testing.T) {
	r := newRig(t)
	r.start("a", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ev := func(node, sev, msg string) envelope.Event {
		return envelope.Event{ID: envelope.NewID(), Site: "dc1", Source: "webhook", Type: "test", Node: node, Severity: sev, Message: msg, Time: t0}
	}
	batch := &envelope.EventBatch{Events: []envelope.Event{
		ev("batch-1", "major", "first"), ev("batch-2", "major", "down"), ev("batch-1", "critical", "second"),
		ev("batch-3", "loud", "unknown severity"), ev("batch-2", "clear", "up"),
		ev("batch-4", "major", "down"), ev("batch-4", "clear", "up"), ev("batch-4", "major", "down again"),
	}}
	ack, err := r.pub.Publish(ctx, bus.EventSubject("dc1", "webhook"), envelope.Meta{}, batch)
	if err != nil {
		t.Fatal(err)
	}
	r.one("batch-1", func(a api.Alert) error {
		if a.Count != 2 || a.Message != "second" || a.Severity != "critical" || a.State != api.StateOpen {
			return fmt.Errorf("count %d message %q severity %s state %s, want 2 \"second\" critical open", a.Count, a.Message, a.Severity, a.State)
		}
		return nil
	})
	r.one("batch-2", countIs(1, api.StateClosed))
	eventually(t, 10*time.Second, func() error { // open, clear, open in one message: two alerts
		var got []string
		ids := map[string]bool{}
		for _, a := range r.alerts("") {
			if a.Node == "batch-4" {
				got = append(got, a.State+" "+a.Message)
				ids[a.ID] = true
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"closed up", "open down again"}) || len(ids) != 2 {
			return fmt.Errorf("alerts of batch-4 %v with %d ids, want one closed by the clear and one open, two ids", got, len(ids))
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		st, err := r.js.Stream(ctx, bus.StreamDLQ)
		if err != nil {
			return err
		}
		m, err := st.GetLastMsgForSubject(ctx, bus.DLQOriginSubject(Service, "dc1"))
		if err != nil {
			return fmt.Errorf("no dead letter yet: %w", err)
		}
		if reason := m.Header.Get(bus.HeaderDLQReason); !strings.Contains(reason, "event 3 of the 8") || !strings.Contains(reason, "loud") {
			return fmt.Errorf("dead letter reason %q, want it to name event 3 of the 8 and its severity", reason)
		}
		if m.Header.Get(envelope.HeaderType) != envelope.TypeEvent || !strings.Contains(string(m.Data), "batch-3") {
			return fmt.Errorf("dead letter %s %s, want the bad event alone", m.Header.Get(envelope.HeaderType), m.Data)
		}
		return nil
	})
	st, err := r.js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetMsg(ctx, ack.Sequence); err != nil {
		t.Errorf("the batch is no longer in EVENTS (%v): its good events would be lost to a replay", err)
	}
	for _, a := range r.alerts("") {
		if a.Node == "batch-3" {
			t.Errorf("the bad event made an alert: %+v", a)
		}
	}
	// A later message's event is newer than all of the first's.
	later := &envelope.EventBatch{Events: []envelope.Event{ev("batch-1", "minor", "third")}}
	if _, err := r.pub.Publish(ctx, bus.EventSubject("dc1", "webhook"), envelope.Meta{}, later); err != nil {
		t.Fatal(err)
	}
	r.one("batch-1", func(a api.Alert) error {
		if a.Count != 3 || a.Message != "third" || a.Severity != "minor" {
			return fmt.Errorf("count %d message %q severity %s, want 3 \"third\" minor", a.Count, a.Message, a.Severity)
		}
		return nil
	})
}
