package correlation

import (
	"context"
	"fmt"
	"slices"
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
