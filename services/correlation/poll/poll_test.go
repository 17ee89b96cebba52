package poll_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/httprequest"
	"github.com/outpost-dev/outpost/services/correlation/poll"
)

func TestParseRun(t *testing.T) {
	slot := time.Unix(1795942800, 0).UTC()
	for _, c := range []struct {
		run  string
		want poll.Ref
		ok   bool
	}{
		{"collect/metrics/load/1795942800/10.0.0.5", poll.Ref{Owner: "metrics", Name: "load", Target: "10.0.0.5", Slot: slot}, true},
		{"collect/connector/tool/1795942800/api.example.lan", poll.Ref{Owner: "connector", Name: "tool", Target: "api.example.lan", Slot: slot}, true},
		{"discovery/01JG", poll.Ref{}, false},
		{"collect/metrics/load/1795942800", poll.Ref{}, false},
		{"collect/metrics/load/soon/10.0.0.5", poll.Ref{}, false},
		{"", poll.Ref{}, false},
	} {
		got, ok := poll.ParseRun(c.run)
		if ok != c.ok || got != c.want {
			t.Errorf("ParseRun(%q) = %+v %v, want %+v %v", c.run, got, ok, c.want, c.ok)
		}
	}
}

// owner is a fixed set of jobs that records what it is told.
type owner struct {
	jobs   []poll.Job
	mu     sync.Mutex
	failed []poll.Ref
}

func (o *owner) Jobs() []poll.Job { return o.jobs }
func (o *owner) Result(context.Context, poll.Ref, *envelope.Result) error {
	return errors.New("no result expected: no bridge runs these probes")
}
func (o *owner) Failed(_ context.Context, ref poll.Ref, _ error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failed = append(o.failed, ref)
}

// Due on a fake clock against a real JetStream: each job's probe goes once per slot of its
// interval however often Due runs; a slot missed is not caught up (only the current one is
// fired); a job that cannot be sent is reported to its owner once per slot, not per tick.
func TestDueFiresEachSlotOnce(t *testing.T) {
	srv, err := bus.StartServer(bus.ServerConfig{Name: "poll-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("poll-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := bus.Provision(ctx, js, bus.DefaultTopology(bus.DefaultLimits())); err != nil {
		t.Fatal(err)
	}
	// The probe's TTL is counted by the server's clock, so the fake starts a little ahead of
	// the wall clock (on a minute boundary + 1s, so the slots below are known) rather than on
	// a fixed date.
	start := time.Now().UTC().Truncate(time.Minute).Add(time.Minute + time.Second)
	fc := clock.NewFake(start)
	params, _ := json.Marshal(httprequest.Params{URL: "http://127.0.0.1:9/status.json"})
	o := &owner{jobs: []poll.Job{
		{Name: "fast", Site: "dc1", Kind: httprequest.Kind, Target: "127.0.0.1", Params: params, Interval: 10 * time.Second},
		{Name: "slow", Site: "dc1", Kind: httprequest.Kind, Target: "127.0.0.1", Params: params, Interval: time.Minute},
		{Name: "broken", Site: "dc1", Kind: "no_such_kind", Target: "127.0.0.1", Interval: 10 * time.Second},
		{Name: "off", Site: "dc1", Kind: httprequest.Kind, Target: "127.0.0.1", Params: params}, // no interval: never fired
	}}
	p := poll.New(poll.Config{Replica: "r1"}, poll.Deps{NC: nc, JS: js, Clock: fc, Pub: bus.NewPublisher(js, envelope.ServiceSource("correlation"), nil)},
		map[string]poll.Owner{"metrics": o})
	base := start.Truncate(time.Minute)
	for _, s := range []struct {
		name    string
		advance time.Duration
		sent    int64
		failed  []time.Time // slots of the broken job reported so far
	}{
		{"first tick: every job's current slot", 0, 2, []time.Time{base}},
		{"the same instant again: nothing", 0, 2, []time.Time{base}},
		{"later in the same slots: nothing", 8 * time.Second, 2, []time.Time{base}},
		{"the fast job's next slot", time.Second, 3, []time.Time{base, base.Add(10 * time.Second)}},
		{"a minute on: the current slots only, none caught up", 50 * time.Second, 5, []time.Time{base, base.Add(10 * time.Second), base.Add(time.Minute)}},
		{"ticks within it: nothing", 3 * time.Second, 5, []time.Time{base, base.Add(10 * time.Second), base.Add(time.Minute)}},
	} {
		fc.Advance(s.advance)
		p.Due(ctx)
		p.Due(ctx)
		o.mu.Lock()
		var failed []time.Time
		for _, r := range o.failed {
			if r.Name != "broken" || r.Owner != "metrics" {
				t.Fatalf("%s: failed %+v, want only the broken job", s.name, r)
			}
			failed = append(failed, r.Slot)
		}
		o.mu.Unlock()
		if got := p.Sent.Load(); got != s.sent || fmt.Sprint(failed) != fmt.Sprint(s.failed) {
			t.Fatalf("%s (at %s): %d probes sent, broken reported for %v; want %d and %v", s.name, fc.Now().Sub(base), got, failed, s.sent, s.failed)
		}
	}
	// What the queue holds agrees: five probes on the site's collection lane.
	st, err := js.Stream(ctx, bus.StreamProbes)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs != 5 {
		t.Fatalf("PROBES holds %+v (%v), want 5 probes", info.State, err)
	}
}
