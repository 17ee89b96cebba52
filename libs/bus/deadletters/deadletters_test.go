package deadletters_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/api"
	"github.com/outpost-dev/outpost/libs/api/dlq"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/bus/deadletters"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
)

var t0 = time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)

type hub struct {
	srv  *bus.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	topo bus.Topology
}

func newHub(t *testing.T, limits bus.Limits, consumers ...bus.ConsumerSpec) *hub {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "dlq-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("dlq-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); srv.Shutdown() })
	js, _ := jetstream.New(nc)
	h := &hub{srv: srv, nc: nc, js: js, topo: bus.DefaultTopology(limits).WithConsumers(consumers...)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, js, h.topo); err != nil {
		t.Fatal(err)
	}
	return h
}

// serve runs the DLQ service on the hub until the test ends.
func (h *hub) serve(t *testing.T, clk clock.Clock) *deadletters.Service {
	t.Helper()
	cfg := deadletters.DefaultConfig()
	s, err := deadletters.New(cfg, deadletters.Deps{NC: h.nc, JS: h.js, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, 10*time.Second, func() error {
		// seq 0 is refused by the service itself once it answers
		_, err := dlq.Show.Call(context.Background(), h.nc, dlq.ShowRequest{})
		var se *bus.ServiceError
		if errors.As(err, &se) && se.Code == 400 {
			return nil
		}
		return fmt.Errorf("not serving yet: %v", err)
	})
	return s
}

func (h *hub) dlqCount(t *testing.T) uint64 {
	t.Helper()
	st, err := h.js.Stream(context.Background(), bus.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", d, err)
}

func runRouter(t *testing.T, r *bus.Router) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case <-r.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("router did not start")
	}
	t.Cleanup(func() { cancel(); <-done })
}

func TestEndpointsMatchContract(t *testing.T) {
	s, err := deadletters.New(deadletters.DefaultConfig(), deadletters.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.CheckEndpoints(dlq.Service, s.Endpoints()); err != nil {
		t.Fatal(err)
	}
}

// TestDeadLettersRetryToSuccess makes the dead letters the suite's fault tests make — a CMDB
// payload of a class the model lacks (permanent), a CMDB payload during a store outage
// (max_deliveries), a site's result for a run discovery does not know (permanent, from site
// lab) — with real Routers whose handlers depend on real stores (KV buckets). Then it fixes
// each cause, retries everything through svc.dlq.retry, and sees every message processed to
// success, each carrying its retry marker and its original headers, and the DLQ empty.
func TestDeadLettersRetryToSuccess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	h := newHub(t, bus.DefaultLimits(),
		bus.ConsumerSpec{Stream: bus.StreamCMDB, Name: "cmdb-ingest", Filters: []string{"cmdb.ingest.>"}, MaxDeliver: 2, AckWait: 5 * time.Second},
		bus.ConsumerSpec{Stream: bus.StreamResults, Name: "disc-results", Filters: []string{"result.discovery.>"}, MaxDeliver: 2, AckWait: 5 * time.Second})
	h.serve(t, nil)
	classes, err := h.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "test_classes"})
	if err != nil {
		t.Fatal(err)
	}
	runs, err := h.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "test_runs"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := classes.Put(ctx, "linux_server", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	done := map[string]bool{} // message ids processed to success
	// What reaches the CMDB's subjects, headers and all (JetStream publishes are seen by
	// core subscribers too).
	seenOnCMDB := map[string]nats.Header{}
	spy, err := h.nc.Subscribe("cmdb.ingest.>", func(m *nats.Msg) {
		mu.Lock()
		seenOnCMDB[m.Header.Get(envelope.HeaderID)] = m.Header
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = spy.Unsubscribe() }()
	// The CMDB: classes from the model, CIs into the store (the test_cis bucket, missing
	// during the outage).
	cmdb, err := bus.NewRouter(h.nc, h.js, bus.RouterConfig{Service: "cmdb", Topology: h.topo, Retries: 1, RetryInitial: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmdb.Handle("cmdb", "cmdb-ingest", bus.Decoded(func(ctx context.Context, meta envelope.Meta, p *envelope.CIPayload) error {
		for i, it := range p.Items {
			if _, err := classes.Get(ctx, it.Class); errors.Is(err, jetstream.ErrKeyNotFound) {
				return bus.Permanent(fmt.Errorf("items[%d].class: unknown class %q", i, it.Class))
			} else if err != nil {
				return err
			}
		}
		store, err := h.js.KeyValue(ctx, "test_cis")
		if err != nil {
			return fmt.Errorf("CI store unavailable: %w", err)
		}
		if _, err := store.Put(ctx, meta.ID, []byte(p.Source)); err != nil {
			return err
		}
		mu.Lock()
		done[meta.ID] = true
		mu.Unlock()
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	runRouter(t, cmdb)
	disc, err := bus.NewRouter(h.nc, h.js, bus.RouterConfig{Service: "discovery", Topology: h.topo, Retries: 1, RetryInitial: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := disc.Handle("results", "disc-results", bus.DecodedResult(func(ctx context.Context, meta envelope.Meta, r *envelope.Result) error {
		if _, err := runs.Get(ctx, r.Run); err != nil {
			return bus.Permanent(fmt.Errorf("result %s: no run %s", r.ID, r.Run))
		}
		mu.Lock()
		done[meta.ID] = true
		mu.Unlock()
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	runRouter(t, disc)

	hubPub := bus.NewPublisher(h.js, envelope.ServiceSource("discovery"), nil)
	payload := func(class string) *envelope.CIPayload {
		return &envelope.CIPayload{Source: "discovery", Observed: t0, Items: []envelope.CIItem{{Ref: "h", Class: class, Attributes: map[string]any{"serial_number": "SN-1"}}}}
	}
	// 1. A class the model lacks.
	if _, err := hubPub.Publish(ctx, "cmdb.ingest.0", envelope.Meta{ID: "payload-toaster", Run: "run-1"}, payload("toaster")); err != nil {
		t.Fatal(err)
	}
	// 2. A store outage: the CI store is missing while the payload is delivered.
	if _, err := hubPub.Publish(ctx, "cmdb.ingest.1", envelope.Meta{ID: "payload-outage"}, payload("linux_server")); err != nil {
		t.Fatal(err)
	}
	// 3. A site's result for a run the discovery service does not know (yet). The bridge
	// plants a DLQ header naming a hub subject: it must not steer the retry.
	bridgePub := bus.NewPublisher(h.js, envelope.AgentSource("lab", "br-1"), nil)
	res := &envelope.Result{ID: "p1-1-0", Probe: "p1", Run: "run-late", App: "discovery", Agent: "br-1", Site: "lab", Kind: "echo",
		Status: envelope.StatusOK, Final: true, Attempt: 1, Started: t0, Finished: t0}
	msg, span, err := bridgePub.Message(ctx, bus.ResultSubject("discovery", "lab", "echo", "br-1"), envelope.Meta{ID: res.ID, Run: res.Run}, res)
	if err != nil {
		t.Fatal(err)
	}
	span.End()
	msg.Header.Set(bus.HeaderDLQSubject, "cmdb.ingest.0")
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		if n := h.dlqCount(t); n != 3 {
			return fmt.Errorf("%d dead letters, want 3", n)
		}
		return nil
	})
	// What the operator sees, per dead letter.
	want := map[string]struct{ code, subject, origin string }{
		"payload-toaster": {bus.CodePermanent, "cmdb.ingest.0", "hub"},
		"payload-outage":  {bus.CodeMaxDeliveries, "cmdb.ingest.1", "hub"},
		"p1-1-0":          {bus.CodePermanent, bus.ResultSubject("discovery", "lab", "echo", "br-1"), "lab"},
	}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := dlq.Show.Call(ctx, h.nc, dlq.ShowRequest{Seq: seq})
		if err != nil {
			t.Fatal(err)
		}
		id := m.Headers["Ce-Id"]
		if len(id) == 0 {
			id = m.Headers[envelope.HeaderID]
		}
		if len(id) == 0 {
			t.Fatalf("dead letter %d keeps no ce-id: %v", seq, m.Headers)
		}
		w, ok := want[id[0]]
		if !ok || m.Code != w.code || m.SourceSubject != w.subject || m.Origin != w.origin || !m.Retryable || m.Reason == "" {
			t.Fatalf("dead letter %d: %+v; want %+v, retryable, with a reason", seq, m, w)
		}
	}
	// Fix the causes: the class is added to the model, the store is back, the run exists.
	if _, err := classes.Put(ctx, "toaster", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "test_cis"}); err != nil {
		t.Fatal(err)
	}
	if _, err := runs.Put(ctx, "run-late", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	reply, err := dlq.Retry.Call(ctx, h.nc, dlq.RetryRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Retried) != 3 || len(reply.NotRetried) != 0 {
		t.Fatalf("retry: %+v", reply)
	}
	subjects := map[string]bool{}
	for _, r := range reply.Retried {
		if r.Retry != 1 {
			t.Fatalf("retried %+v: want retry 1", r)
		}
		subjects[r.Subject] = true
	}
	for _, w := range want {
		if !subjects[w.subject] {
			t.Fatalf("retried to %v, want each dead letter to its own subject %s", subjects, w.subject)
		}
	}
	eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for id := range want {
			if !done[id] {
				return fmt.Errorf("%s not processed yet (done: %d)", id, len(done))
			}
		}
		return nil
	})
	mu.Lock()
	h1 := seenOnCMDB["payload-toaster"]
	mu.Unlock()
	if h1.Get(dlq.HeaderRetry) != "1" || h1.Get("outpost-run") != "run-1" || h1.Get(bus.HeaderDLQReason) != "" {
		t.Fatalf("retried message headers %v: want the retry marker, the original headers, no DLQ headers", h1)
	}
	if _, ok := seenOnCMDB["p1-1-0"]; ok {
		t.Fatal("the bridge's planted header steered its result onto a CMDB subject")
	}
	time.Sleep(200 * time.Millisecond) // a retried message failing again would be back by now
	if n := h.dlqCount(t); n != 0 {
		t.Fatalf("%d dead letters left after the retry", n)
	}
}

// TestRetryNeverLendsHubRights: a dead letter from a site goes back only to a subject that
// site's bridges may publish themselves; one a bridge wrote itself (dlq.bridge.<site>, headers
// and all) is never re-published. Nothing reaches the hub's subjects.
func TestRetryNeverLendsHubRights(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newHub(t, bus.DefaultLimits())
	h.serve(t, nil)
	cases := []struct {
		name, dlqSubject, source string
		retryable                bool
	}{
		{"a bridge's own dead letter naming the CMDB", bus.BridgeDLQSubject("lab"), "cmdb.ingest.0", false},
		{"a bridge's own dead letter naming its probes", bus.BridgeDLQSubject("lab"), bus.ProbeSubject("lab", "standard", "ssh", bus.AppDiscovery), false},
		{"a site's dead letter naming a hub subject", bus.DLQOriginSubject("discovery", "lab"), "cmdb.ingest.0", false},
		{"a site's dead letter naming another site's results", bus.DLQOriginSubject("discovery", "lab"), bus.ResultSubject("discovery", "dc2", "echo", "br-1"), false},
		{"a site's dead letter naming a wildcard", bus.DLQOriginSubject("discovery", "lab"), "result.discovery.lab.*.br-1", false},
		{"a site's dead letter naming its own result subject", bus.DLQOriginSubject("discovery", "lab"), bus.ResultSubject("discovery", "lab", "echo", "br-1"), true},
		{"a site's dead letter naming its own events", bus.DLQOriginSubject("correlation", "lab"), bus.EventSubject("lab", "syslog"), true},
		{"the hub's own dead letter", bus.DLQOriginSubject("cmdb", "hub"), "cmdb.ingest.0", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := h.js.Stream(ctx, bus.StreamCMDB)
			before, _ := st.Info(ctx)
			m := &nats.Msg{Subject: tc.dlqSubject, Header: nats.Header{}, Data: []byte(`{"source":"x","items":[]}`)}
			m.Header.Set(bus.HeaderDLQSubject, tc.source)
			m.Header.Set(bus.HeaderDLQCode, bus.CodeDecode)
			ack, err := h.js.PublishMsg(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			shown, err := dlq.Show.Call(ctx, h.nc, dlq.ShowRequest{Seq: ack.Sequence})
			if err != nil {
				t.Fatal(err)
			}
			if shown.Retryable != tc.retryable || !tc.retryable && shown.RetryRefusal == "" {
				t.Fatalf("retryable %v (%q), want %v", shown.Retryable, shown.RetryRefusal, tc.retryable)
			}
			reply, err := dlq.Retry.Call(ctx, h.nc, dlq.RetryRequest{Seqs: []uint64{ack.Sequence}})
			if err != nil {
				t.Fatal(err)
			}
			if tc.retryable {
				if len(reply.Retried) != 1 {
					t.Fatalf("not retried: %+v", reply)
				}
				return
			}
			if len(reply.Retried) != 0 || len(reply.NotRetried) != 1 {
				t.Fatalf("retried: %+v", reply)
			}
			after, _ := st.Info(ctx)
			if after.State.LastSeq != before.State.LastSeq {
				t.Fatal("a refused retry reached the CMDB stream")
			}
			if _, err := dlq.Show.Call(ctx, h.nc, dlq.ShowRequest{Seq: ack.Sequence}); err != nil {
				t.Fatalf("a refused dead letter left the DLQ: %v", err)
			}
		})
	}
}

// TestPurgeByFilter: purge takes what its filter selects, by code, service and age (on the
// service's clock), and refuses to purge everything without --all.
func TestPurgeByFilter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newHub(t, bus.DefaultLimits())
	fake := clock.NewFake(t0)
	h.serve(t, fake)
	put := func(subject, code string, at time.Time) {
		m := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: []byte("x")}
		m.Header.Set(bus.HeaderDLQCode, code)
		m.Header.Set(bus.HeaderDLQSubject, "cmdb.ingest.0")
		m.Header.Set(bus.HeaderDLQTime, at.Format(time.RFC3339Nano))
		if _, err := h.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	put("dlq.cmdb.hub", bus.CodePermanent, t0.Add(-48*time.Hour))
	put("dlq.cmdb.hub", bus.CodeDecode, t0.Add(-48*time.Hour))
	put("dlq.cmdb.hub", bus.CodePermanent, t0.Add(-time.Hour))
	put("dlq.discovery.lab", bus.CodePermanent, t0.Add(-48*time.Hour))
	if _, err := dlq.Purge.Call(ctx, h.nc, dlq.PurgeRequest{}); err == nil {
		t.Fatal("an unfiltered purge without all was accepted")
	}
	steps := []struct {
		req  dlq.PurgeRequest
		n    int
		left uint64
	}{
		{dlq.PurgeRequest{Filter: dlq.Filter{Code: bus.CodePermanent, Service: "cmdb", OlderThan: "24h"}}, 1, 3},
		{dlq.PurgeRequest{Filter: dlq.Filter{Service: "discovery"}}, 1, 2},
		{dlq.PurgeRequest{Filter: dlq.Filter{Code: bus.CodeDecode}}, 1, 1},
		{dlq.PurgeRequest{All: true}, 1, 0},
	}
	for i, s := range steps {
		got, err := dlq.Purge.Call(ctx, h.nc, s.req)
		if err != nil || got.Purged != s.n || h.dlqCount(t) != s.left {
			t.Fatalf("step %d: purged %d (%v), %d left; want %d, %d left", i, got.Purged, err, h.dlqCount(t), s.n, s.left)
		}
	}
}

// TestWarnsBeforeItDiscards: an origin's dead letters reaching 80 % of their quota raise one
// warning event (event.hub.dlq) before the DLQ starts evicting; a purge below re-arms it.
func TestWarnsBeforeItDiscards(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	limits := bus.DefaultLimits()
	limits.DLQPerOrigin = 10
	h := newHub(t, limits)
	s, err := deadletters.New(deadletters.DefaultConfig(), deadletters.Deps{NC: h.nc, JS: h.js, Clock: clock.NewFake(t0)})
	if err != nil {
		t.Fatal(err)
	}
	events, err := h.js.OrderedConsumer(ctx, bus.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.EventSubject("hub", dlq.Service)}})
	if err != nil {
		t.Fatal(err)
	}
	warnings := 0
	read := func() {
		batch, err := events.FetchNoWait(10)
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			_, ev, err := envelope.DecodeInto[*envelope.Event](m.Headers(), m.Data())
			if err != nil || ev.Type != "dlq_near_limit" || !strings.Contains(ev.Message, "dlq.cmdb.hub") {
				t.Fatalf("event %+v %v", ev, err)
			}
			warnings++
		}
	}
	put := func(n int) {
		for range n {
			if _, err := h.js.Publish(ctx, "dlq.cmdb.hub", []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	steps := []struct {
		name     string
		do       func()
		warnings int
	}{
		{"7 of 10", func() { put(7) }, 0},
		{"8 of 10", func() { put(1) }, 1},
		{"9 of 10: still the same crossing", func() { put(1) }, 1},
		{"purged", func() {
			if _, err := s.Purge(ctx, dlq.PurgeRequest{All: true}); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"8 of 10 again", func() { put(8) }, 2},
	}
	for _, st := range steps {
		st.do()
		s.Check(ctx)
		time.Sleep(50 * time.Millisecond) // the event's publish ack is in; let the fetch see it
		read()
		if warnings != st.warnings {
			t.Fatalf("%s: %d warnings, want %d", st.name, warnings, st.warnings)
		}
	}
}
