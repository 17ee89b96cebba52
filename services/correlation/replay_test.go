package correlation

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

const replayGrouping = "grouping: {group_by: [site, node], group_wait: 1s, group_interval: 1m, repeat_interval: 24h}\n"

// Replaying EVENTS: a range the alerts applied changes nothing however often it is
// replayed (by the request's own check and by the partition's, forced here); events a rule
// dropped are applied once after the rule is removed — into the open alert of their key
// (count only) or, with no open alert, into a closed replay record — and nothing is
// notified again.
func TestReplayEvents(t *testing.T) {
	r := newRig(t)
	rc := newReceiver(t)
	tl := &timeline{rig: r, rc: rc}
	dir := t.TempDir()
	writeRules := func(text string) {
		if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeRules(replayGrouping + "event_rules:\n  - {name: noise, match: {additional.noise: \"yes\"}, ignore: true}\n")
	svcs := map[string]*service{}
	mod := func(c *Config) {
		c.RulesDir = dir
		c.AlertTimeout = 0
		c.NotifyBackoff = 10 * time.Millisecond
		c.Notifiers = []NotifierConfig{{Name: "hook", Webhook: rc.srv.URL}}
	}
	stopA := r.startSvc("a", mod, svcs)

	for range 3 {
		tl.event("web-01", "cpu", "major")
	}
	r.send("dc1", "webhook", envelope.Event{Node: "web-01", Type: "cpu", Severity: "critical", Message: "noise burst", Fields: map[string]string{"noise": "yes"}})
	r.send("dc1", "webhook", envelope.Event{Node: "web-01", Type: "cpu", Severity: "critical", Message: "noise again", Fields: map[string]string{"noise": "yes"}})
	r.send("dc1", "webhook", envelope.Event{Node: "db-01", Type: "disk", Severity: "major", Message: "noise on disk", Fields: map[string]string{"noise": "yes"}})
	r.send("dc1", "webhook", envelope.Event{Node: "db-01", Type: "disk", Severity: "major", Message: "noise on disk", Fields: map[string]string{"noise": "yes"}})
	tl.event("old-01", "link", "major")
	tl.event("old-01", "link", "clear")
	tl.at(2 * time.Second)
	web := "site=dc1|node=web-01|"
	tl.want(web, 1, nil)
	r.waitRouted(t)
	last := r.lastEventSeq(t)

	before := r.snapshot(t)
	// The live pipeline applied or dropped every event: nothing to apply, twice.
	for i := range 2 {
		out := r.replay(t, api.ReplayRequest{FromSeq: 1})
		if out.Applied != 0 || out.Ignored != 4 || out.Invalid != 0 || out.Skipped != out.Events-4 || out.LastSeq != last || out.Next != 0 {
			t.Fatalf("replay %d of an applied range: %+v, want 0 applied, 4 ignored, the rest skipped, up to seq %d", i+1, out, last)
		}
	}
	// The partition's own check: every event routed again as a replay, bypassing the
	// request's, changes no alert either.
	r.forceReplay(t, svcs["a"], 1, last)
	if got := r.snapshot(t); got != before {
		t.Fatalf("after replaying an applied range the alerts changed:\n got %s\nwant %s", got, before)
	}
	stopA()

	// The rule is removed: its events were never applied and now are, once.
	writeRules(replayGrouping)
	r.startSvc("b", mod, svcs)
	dry := r.replay(t, api.ReplayRequest{FromSeq: 1, ToSeq: last, DryRun: true})
	if dry.Applied != 4 || dry.Alerts != 2 || dry.AlertsOpen != 1 || dry.Records != 1 || dry.Ignored != 0 || !dry.DryRun {
		t.Fatalf("dry run: %+v, want 4 events to apply to 2 alerts (1 open, 1 record)", dry)
	}
	if got := r.snapshot(t); got != before {
		t.Fatalf("a dry run changed the alerts:\n got %s\nwant %s", got, before)
	}
	for i := range 2 {
		out := r.replay(t, api.ReplayRequest{FromSeq: 1, ToSeq: last})
		want := 4
		if i == 1 {
			want = 0
		}
		if out.Applied != want {
			t.Fatalf("replay %d after the rule was removed: %+v, want %d applied", i+1, out, want)
		}
		r.one("web-01", func(a api.Alert) error {
			if a.Count != 5 || a.State != api.StateOpen || a.Severity != "major" || a.Message != "cpu major" {
				return fmt.Errorf("web-01: count %d state %s severity %s message %q, want 5 open major %q (a replay changes the count only)",
					a.Count, a.State, a.Severity, a.Message, "cpu major")
			}
			return nil
		})
		r.one("db-01", func(a api.Alert) error {
			if a.Count != 2 || a.State != api.StateClosed || a.CloseReason != api.ClosedByReplay {
				return fmt.Errorf("db-01: count %d state %s reason %q, want a closed replay record of 2", a.Count, a.State, a.CloseReason)
			}
			return nil
		})
	}
	r.forceReplay(t, svcs["b"], 1, last)
	r.one("web-01", countIs(5, api.StateOpen))
	r.one("old-01", countIs(1, api.StateClosed))

	// Nothing notified again: web-01's content (ids, severities) did not change, the
	// record joins no group.
	tl.at(5 * time.Minute)
	tl.want(web, 1, nil)
	if ns := rc.of("site=dc1|node=db-01|"); len(ns) != 0 {
		t.Fatalf("the replay record was notified: %+v", ns)
	}
}

// The applied ledger: what an alert moves out of its document is read back for a replay.
func TestAppliedLedger(t *testing.T) {
	var rs []api.SeqRange
	for q := uint64(1); q <= 4*(ledgerKeep+ledgerSpill); q += 2 {
		rs = addSeq(rs, q)
	}
	keep, spill := trimApplied(rs, 10)
	if spill != nil || len(keep) != len(rs) {
		t.Fatalf("below the threshold: kept %d spilled %d, want all kept", len(keep), len(spill))
	}
	floor := rs[len(rs)-3].To
	keep, spill = trimApplied(rs, floor)
	if len(spill)+len(keep) != len(rs) || len(spill) == 0 || spill[len(spill)-1].To >= keep[0].From || keep[len(keep)-1] != rs[len(rs)-1] {
		t.Fatalf("trim at %d: kept %d spilled %d of %d", floor, len(keep), len(spill), len(rs))
	}
	r := newRig(t)
	svcs := map[string]*service{}
	r.startSvc("a", nil, svcs)
	s := svcs["a"]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.spill(ctx, "slot1", spill[:3]); err != nil {
		t.Fatal(err)
	}
	if err := s.spill(ctx, "slot1", spill[2:]); err != nil { // overlapping: a retried write
		t.Fatal(err)
	}
	got, err := s.ledger(ctx, "slot1")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(spill) {
		t.Fatalf("ledger read back %v, want %v", got, spill)
	}
	a := &api.Alert{AppliedEvents: keep, AppliedFrom: 1}
	for _, q := range []uint64{spill[0].From, spill[len(spill)-1].To, keep[0].From} {
		if !takenBefore(a, got, q, 0) {
			t.Errorf("seq %d not taken, want taken (in the alert or its ledger)", q)
		}
	}
	if takenBefore(a, got, 2, 0) {
		t.Error("seq 2 (never applied) taken")
	}
	if !takenBefore(&api.Alert{}, nil, 5, 9) {
		t.Error("an older version's alert: seq 5 at or below its floor 9 not taken, want taken (unknown)")
	}
}

func (r *rig) replay(t *testing.T, req api.ReplayRequest) api.ReplayReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := api.Replay.Call(ctx, r.nc, req)
	if err != nil {
		t.Fatalf("replay %+v: %v", req, err)
	}
	return out
}

// forceReplay routes EVENTS from..to to the partitions as a replay without the request's
// check, and waits until the partitions acknowledged them.
func (r *rig) forceReplay(t *testing.T, s *service, from, to uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	parts := map[int][]routed{}
	var seqs []uint64
	n := 0
	err := s.readEvents(ctx, from, time.Time{}, func(m jetstream.Msg, seq uint64, _ time.Time) (bool, error) {
		if seq > to {
			return false, nil
		}
		_, evs, err := s.decode(m)
		if err != nil {
			return true, nil
		}
		seqs = append(seqs, seq)
		for _, ev := range evs {
			rt, ignored, err := s.router.keyReplay(m.Subject(), ev)
			if err != nil || ignored {
				continue
			}
			rt.EventSeq, rt.Replay = seq, true
			p := partitionOf(s.rules.groupKey(func(k string) string { return eventField(ev, k) }), s.cfg.Partitions)
			parts[p] = append(parts[p], rt)
			n++
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	applied := s.applied.Load()
	// another id than any request's: the partition stream would take an identical copy
	// of an earlier one (same sequences, same content) as a duplicate
	if err := s.publishReplay(ctx, append(seqs, uint64(time.Now().UnixNano())), parts); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if got := s.applied.Load() - applied; got < int64(n) {
			return fmt.Errorf("partitions took %d of the %d replayed events", got, n)
		}
		return nil
	})
}

// waitRouted waits until the router acknowledged every EVENTS message.
func (r *rig) waitRouted(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := r.js.Consumer(ctx, bus.StreamEvents, EventsConsumer)
		if err != nil {
			return err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending+uint64(info.NumAckPending) > 0 {
			return fmt.Errorf("events consumer: %d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
		}
		return nil
	})
}

func (r *rig) lastEventSeq(t *testing.T) uint64 {
	t.Helper()
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
	return info.State.LastSeq
}

// snapshot is every alert's id, state, count and severity, in list order.
func (r *rig) snapshot(t *testing.T) string {
	t.Helper()
	s := ""
	for _, a := range r.alerts("") {
		s += fmt.Sprintf("%s %s %s %d %s; ", a.Node, a.ID, a.State, a.Count, a.Severity)
	}
	return s
}
