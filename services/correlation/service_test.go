package correlation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
)

func TestMain(m *testing.M) {
	if os.Getenv(replicaEnv) != "" {
		os.Exit(runReplicaProcess()) // this test binary re-executed as a replica (kill_test.go)
	}
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rig is an embedded JetStream with the hub's topology and correlation replicas on a fake clock.
type rig struct {
	t     testing.TB
	quiet bool // no service logs (benchmarks)
	srv   *bus.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	clock *clock.Fake
	pub   *bus.Publisher
	// logs holds every replica's log lines, for tests that check what is (not) logged.
	logs lockedBuffer
}

func newRig(t testing.TB) *rig {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "corr-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("corr-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, js, bus.DefaultTopology(bus.Limits{}).WithConsumers(Consumers()...)); err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, srv: srv, nc: nc, js: js, clock: clock.NewFake(t0), pub: bus.NewPublisher(js, "/test", nil)}
}

// start runs one replica until the test ends; stop ends it early.
func (r *rig) start(name string, mod func(*Config)) (stop func()) { return r.startSvc(name, mod, nil) }

// startSvc is start that records the replica's service in svcs.
func (r *rig) startSvc(name string, mod func(*Config), svcs map[string]*service) (stop func()) {
	cfg := DefaultConfig()
	cfg.Replica = name
	cfg.CMDBLookup = false
	cfg.FlushInterval = 10 * time.Millisecond
	cfg.AlertTimeout = time.Hour
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{r.t}, &r.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	if r.quiet {
		log = slog.New(slog.DiscardHandler)
	}
	started := make(chan *service, 1)
	go func() {
		done <- run(ctx, cfg, Deps{NC: r.nc, JS: r.js, Clock: r.clock, Logger: log}, func(s *service) { started <- s })
	}()
	if svcs != nil {
		svcs[name] = <-started
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("replica %s: %v", name, err)
		}
	}
	r.t.Cleanup(stop)
	eventually(r.t, 10*time.Second, func() error {
		_, err := api.SilenceList.Call(ctx, r.nc, page.Request{})
		return err
	})
	return stop
}

func (r *rig) send(site, source string, ev envelope.Event) {
	r.t.Helper()
	ev.ID, ev.Site, ev.Source = envelope.NewID(), site, source
	if ev.Type == "" {
		ev.Type = "test"
	}
	ev.Time = t0
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.pub.Publish(ctx, bus.EventSubject(site, source), envelope.Meta{ID: ev.ID}, &ev); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) alerts(state string) []api.Alert {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := api.AlertList.Call(ctx, r.nc, api.AlertsListRequest{State: state})
	if err != nil {
		r.t.Fatal(err)
	}
	return out.Items
}

// one waits until exactly one alert matches node and check holds for it.
func (r *rig) one(node string, check func(a api.Alert) error) api.Alert {
	r.t.Helper()
	var got api.Alert
	eventually(r.t, 10*time.Second, func() error {
		var found []api.Alert
		for _, a := range r.alerts("") {
			if a.Node == node {
				found = append(found, a)
			}
		}
		if len(found) != 1 {
			return fmt.Errorf("%d alerts for node %s, want 1: %+v", len(found), node, found)
		}
		got = found[0]
		return check(got)
	})
	return got
}

func countIs(n int64, state string) func(api.Alert) error {
	return func(a api.Alert) error {
		if a.Count != n || a.State != state {
			return fmt.Errorf("count %d state %s, want %d %s", a.Count, a.State, n, state)
		}
		return nil
	}
}

func TestDedupCountsAndClearCloses(t *testing.T) {
	r := newRig(t)
	r.start("a", nil)
	ev := envelope.Event{Node: "Web-01", Type: "cpu", Resource: "cpu0", Metric: "load", Severity: "major", Message: "load high"}
	for range 250 {
		r.send("dc1", "webhook", ev)
	}
	// Another site with the same node is another alert: addresses and names repeat across sites.
	r.send("dc2", "webhook", ev)
	eventually(t, 10*time.Second, func() error {
		as := r.alerts(api.StateOpen)
		if len(as) != 2 {
			return fmt.Errorf("%d open alerts, want 2 (dc1 and dc2)", len(as))
		}
		for _, a := range as {
			if a.Site == "dc1" && a.Count != 250 {
				return fmt.Errorf("dc1 count %d, want 250", a.Count)
			}
		}
		return nil
	})
	for _, x := range r.alerts(api.StateOpen) {
		if x.Site == "dc1" && (x.Count != 250 || x.Message != "load high" || x.Severity != "major" || !x.FirstSeen.Equal(t0)) {
			t.Errorf("dc1 alert: %+v", x)
		}
	}
	r.clock.Advance(time.Minute)
	clear := ev
	clear.Severity, clear.Message = api.SeverityClear, "load ok"
	r.send("dc1", "webhook", clear)
	eventually(t, 10*time.Second, func() error {
		for _, x := range r.alerts("") {
			if x.Site == "dc1" && (x.State != api.StateClosed || x.CloseReason != api.ClosedByClear || x.Count != 250) {
				return fmt.Errorf("dc1 alert not closed by its clear: %+v", x)
			}
		}
		return nil
	})
	// The next problem event of the key opens a new alert; the closed one is kept.
	r.send("dc1", "webhook", ev)
	eventually(t, 10*time.Second, func() error {
		var open, closed int
		for _, x := range r.alerts("") {
			if x.Site != "dc1" {
				continue
			}
			switch x.State {
			case api.StateOpen:
				open++
			case api.StateClosed:
				closed++
			}
		}
		if open != 1 || closed != 1 {
			return fmt.Errorf("dc1: %d open, %d closed alerts; want 1 and 1", open, closed)
		}
		return nil
	})
}

func TestMessageKeyDedupsAcrossNodes(t *testing.T) {
	r := newRig(t)
	r.start("a", nil)
	r.send("dc1", "webhook", envelope.Event{Node: "a", MessageKey: "db-outage", Severity: "critical", Message: "db down on a"})
	r.send("dc1", "webhook", envelope.Event{Node: "b", MessageKey: "db-outage", Severity: "critical", Message: "db down on b"})
	eventually(t, 10*time.Second, func() error {
		as := r.alerts("")
		if len(as) != 1 || as[0].Count != 2 || as[0].Message != "db down on b" {
			return fmt.Errorf("alerts %+v, want one with count 2 and the latest message", as)
		}
		return nil
	})
}

func TestTimeoutCloses(t *testing.T) {
	r := newRig(t)
	r.start("a", func(c *Config) { c.AlertTimeout = 30 * time.Minute })
	r.send("dc1", "syslog", envelope.Event{Node: "n1", Severity: "minor", Message: "m"})
	r.one("n1", countIs(1, api.StateOpen))
	// Touched at 20 min: the timeout counts from then.
	r.clock.Advance(20 * time.Minute)
	r.send("dc1", "syslog", envelope.Event{Node: "n1", Severity: "minor", Message: "m"})
	r.one("n1", countIs(2, api.StateOpen))
	r.clock.Advance(20 * time.Minute) // 40 min: 20 since the last event
	time.Sleep(50 * time.Millisecond) // give a wrong early close the chance to show (never asserts time)
	r.one("n1", countIs(2, api.StateOpen))
	r.clock.Advance(11 * time.Minute) // 51 min: 31 since the last event
	a := r.one("n1", countIs(2, api.StateClosed))
	if a.CloseReason != api.ClosedByTimeout || a.ClosedAt == nil || a.ClosedAt.Before(t0.Add(50*time.Minute)) {
		t.Errorf("closed %v by %q, want by timeout at or after 50 min", a.ClosedAt, a.CloseReason)
	}
}

func TestSilenceMutesThenExpires(t *testing.T) {
	r := newRig(t)
	r.start("a", func(c *Config) { c.AlertTimeout = 0 }) // the 2 h jump must not time the alert out
	ctx := context.Background()
	sil, err := api.SilenceAdd.Call(ctx, r.nc, api.SilenceAddRequest{Match: map[string]string{"node": "n1"}, For: "2h"})
	if err != nil {
		t.Fatal(err)
	}
	if !sil.EndsAt.Equal(t0.Add(2 * time.Hour)) {
		t.Fatalf("silence ends %s, want %s", sil.EndsAt, t0.Add(2*time.Hour))
	}
	r.send("dc1", "webhook", envelope.Event{Node: "n1", Severity: "major", Message: "m"})
	r.send("dc1", "webhook", envelope.Event{Node: "n2", Severity: "major", Message: "m"})
	r.one("n1", func(a api.Alert) error {
		if len(a.SilencedBy) != 1 || a.SilencedBy[0] != sil.ID {
			return fmt.Errorf("n1 silenced by %v, want [%s]", a.SilencedBy, sil.ID)
		}
		return nil
	})
	r.one("n2", func(a api.Alert) error {
		if len(a.SilencedBy) != 0 {
			return fmt.Errorf("n2 silenced by %v: the matcher is node=n1", a.SilencedBy)
		}
		return nil
	})
	r.clock.Advance(2*time.Hour + time.Second)
	r.send("dc1", "webhook", envelope.Event{Node: "n1", Severity: "major", Message: "m"})
	r.one("n1", func(a api.Alert) error {
		if len(a.SilencedBy) != 0 || a.Count != 2 {
			return fmt.Errorf("n1 after the silence ended: silenced by %v count %d", a.SilencedBy, a.Count)
		}
		return nil
	})
	list, err := api.SilenceList.Call(ctx, r.nc, page.Request{})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("silences ls: %v %+v", err, list)
	}
	if _, err := api.SilenceRemove.Call(ctx, r.nc, api.IDRequest{ID: sil.ID}); err != nil {
		t.Fatal(err)
	}
	_, err = api.SilenceRemove.Call(ctx, r.nc, api.IDRequest{ID: sil.ID})
	var se *bus.ServiceError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Fatalf("removing it again: %v, want 404", err)
	}
}

func TestAckAndClose(t *testing.T) {
	r := newRig(t)
	r.start("a", nil)
	r.send("dc1", "webhook", envelope.Event{Node: "n1", Severity: "major", Message: "m"})
	a := r.one("n1", countIs(1, api.StateOpen))
	ctx := context.Background()
	got, err := api.AlertAck.Call(ctx, r.nc, api.IDRequest{ID: a.ID})
	if err != nil || got.State != api.StateAcknowledged {
		t.Fatalf("ack: %v %+v", err, got)
	}
	// Events keep counting on an acknowledged alert, and do not reopen it.
	r.send("dc1", "webhook", envelope.Event{Node: "n1", Severity: "critical", Message: "m2"})
	r.one("n1", countIs(2, api.StateAcknowledged))
	if got, err = api.AlertClose.Call(ctx, r.nc, api.IDRequest{ID: a.ID}); err != nil || got.State != api.StateClosed || got.CloseReason != api.ClosedByUser {
		t.Fatalf("close: %v %+v", err, got)
	}
	_, err = api.AlertAck.Call(ctx, r.nc, api.IDRequest{ID: a.ID})
	var se *bus.ServiceError
	if !errors.As(err, &se) || se.Code != http.StatusConflict {
		t.Fatalf("ack of a closed alert: %v, want 409", err)
	}
	_, err = api.AlertGet.Call(ctx, r.nc, api.IDRequest{ID: "nope"})
	if !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Fatalf("get of an unknown id: %v, want 404", err)
	}
}

// A body that claims another site than its subject, an unknown severity and undecodable
// bytes go to the DLQ with their reason; the events around them are applied.
func TestPoisonEventsAreDeadLettered(t *testing.T) {
	r := newRig(t)
	r.start("a", nil)
	ctx := context.Background()
	forged := &envelope.Event{ID: envelope.NewID(), Site: "dc2", Source: "webhook", Type: "t", Node: "x", Severity: "major", Time: t0}
	if _, err := r.pub.Publish(ctx, bus.EventSubject("dc1", "webhook"), envelope.Meta{}, forged); err != nil {
		t.Fatal(err)
	}
	r.send("dc1", "webhook", envelope.Event{Node: "y", Severity: "loud"})
	if _, err := r.js.Publish(ctx, bus.EventSubject("dc1", "webhook"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	r.send("dc1", "webhook", envelope.Event{Node: "ok", Severity: "minor"})
	r.one("ok", countIs(1, api.StateOpen))
	eventually(t, 10*time.Second, func() error {
		st, err := r.js.Stream(ctx, bus.StreamDLQ)
		if err != nil {
			return err
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(bus.DLQSubject(Service)+".>"))
		if err != nil {
			return err
		}
		if info.State.Msgs != 3 {
			return fmt.Errorf("%d dead letters, want 3", info.State.Msgs)
		}
		m, err := st.GetLastMsgForSubject(ctx, bus.DLQOriginSubject(Service, "dc1"))
		if err != nil {
			return err
		}
		if m.Header.Get(bus.HeaderDLQReason) == "" {
			return errors.New("dead letter without a reason")
		}
		return nil
	})
	for _, a := range r.alerts("") {
		if a.Node == "x" || a.Node == "y" {
			t.Errorf("a poison event made an alert: %+v", a)
		}
	}
}

// Redelivery never counts an event twice, and a second replica stands by while the first is
// active, then takes over — catching up on what the first had not acknowledged — with
// nothing lost and nothing counted twice.
func TestFailoverCountsEachEventOnce(t *testing.T) {
	r := newRig(t)
	stopA := r.start("a", func(c *Config) { c.ActiveLease = time.Second })
	r.start("b", func(c *Config) { c.ActiveLease = time.Second })
	ev := envelope.Event{Node: "storm", Severity: "major", Message: "m"}
	for range 500 {
		r.send("dc1", "webhook", ev)
	}
	r.one("storm", countIs(500, api.StateOpen))
	stopA() // a graceful stop releases the lease: b takes over at once (its next try)
	for range 500 {
		r.send("dc1", "webhook", ev)
	}
	eventually(t, 20*time.Second, func() error {
		r.clock.Advance(time.Second) // b's standby retries run on the clock
		as := r.alerts("")
		if len(as) != 1 || as[0].Count != 1000 {
			return fmt.Errorf("alerts %+v, want one with count 1000", as)
		}
		return nil
	})
}

// Replaying events already applied (what a new active replica's catch-up, a redelivery and
// a router routing them again in other batches do) changes nothing.
func TestReplayIsIdempotent(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	for range 100 {
		r.send("dc1", "webhook", envelope.Event{Node: "n1", Severity: "major", Message: "m"})
	}
	s, err := newService(ctx, func() Config { c := DefaultConfig(); c.CMDBLookup = false; return c }(), Deps{NC: r.nc, JS: r.js, Clock: r.clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := ensurePartitions(ctx, r.js, s.cfg.Partitions); err != nil {
		t.Fatal(err)
	}
	read := func(stream, subject string, n int) []jetstream.Msg {
		oc, err := r.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		b, err := oc.Fetch(n+1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) != n {
			t.Fatalf("read %d messages of %s, want %d", len(msgs), subject, n)
		}
		return msgs
	}
	// Route overlapping batches (a router that died before acking, its events routed again
	// in other batches) and one batch twice (the partition stream's message ids keep one
	// copy of that one): three routed batches, the first 50 events in all three.
	events := read(bus.StreamEvents, "event.>", 100)
	for _, n := range []int{50, 75, 100, 100} {
		s.router.batch(ctx, events[:n])
	}
	part := partitionOf(s.rules.groupKey(func(k string) string { return map[string]string{"site": "dc1", "node": "n1"}[k] }), s.cfg.Partitions)
	msgs := read(StreamPartitions, partitionSubjectOf(part), 3)
	for round := range 3 {
		p := newProcessor(s, part) // a fresh replica each time: nothing cached
		if err := p.handle(ctx, msgs[:round+1], false); err != nil {
			t.Fatal(err)
		}
	}
	if err := newProcessor(s, part).handle(ctx, msgs, false); err != nil { // all of them in one batch
		t.Fatal(err)
	}
	a, _, err := s.store.get(ctx, slotOf("dc1|webhook|n1|test||"))
	if err != nil || a == nil {
		t.Fatalf("alert: %v %v", a, err)
	}
	if a.Count != 100 {
		t.Errorf("count %d after replaying overlapping batches, want 100", a.Count)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// A lone event is not held for a batch to fill: with a flush interval of 10 s, far beyond
// the wait below, it becomes an alert at once (and the fake clock never moves).
func TestLoneEventIsNotHeldForABatch(t *testing.T) {
	r := newRig(t)
	svcs := map[string]*service{}
	r.startSvc("solo", func(c *Config) { c.Partitions = 1; c.FlushInterval = 10 * time.Second }, svcs)
	eventually(t, 5*time.Second, func() error {
		if len(svcs["solo"].owner.Owned()) != 1 {
			return errors.New("partition 0 not owned yet")
		}
		return nil
	})
	r.send("dc1", "webhook", envelope.Event{Node: "lone-1", Severity: "major", Message: "alone"})
	r.one("lone-1", countIs(1, api.StateOpen))
}
