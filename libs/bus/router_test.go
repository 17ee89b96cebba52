package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

func event(i int) *envelope.Event {
	return &envelope.Event{ID: fmt.Sprintf("e%d", i), Site: "dc1", Source: "test", Type: "test", Time: time.Now()}
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	})
}

// 10,000 messages, two Routers bound to one durable consumer: each handled exactly once overall.
func TestTwoRoutersShareOneConsumerExactlyOnce(t *testing.T) {
	const n = 10_000
	h, topo := newHub(t, bus.ConsumerSpec{Stream: bus.StreamEvents, Name: "corr", Filters: []string{"event.>"}})
	var (
		mu    sync.Mutex
		seen  = map[string]int{}
		byRtr [2]atomic.Int64
	)
	for i := range 2 {
		nc, js := h.conn(t, fmt.Sprintf("replica-%d", i))
		r, err := bus.NewRouter(nc, js, bus.RouterConfig{Service: "correlation", Topology: topo})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Handle("events", "corr", bus.Decoded(func(_ context.Context, meta envelope.Meta, e *envelope.Event) error {
			mu.Lock()
			seen[e.ID]++
			mu.Unlock()
			byRtr[i].Add(1)
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		runRouter(t, r)
	}
	pub := bus.NewPublisher(h.js, envelope.AgentSource("dc1", "br-1"), nil)
	batch := pub.Batch()
	ctx := context.Background()
	for i := range n {
		if err := batch.Add(ctx, bus.EventSubject("dc1", "test"), envelope.Meta{}, event(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != n {
			return fmt.Errorf("%d distinct handled, want %d", len(seen), n)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // a late duplicate would show now
	mu.Lock()
	defer mu.Unlock()
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("%s handled %d times", id, c)
		}
	}
	if byRtr[0].Load() == 0 || byRtr[1].Load() == 0 {
		t.Fatalf("one router did all the work: %d / %d", byRtr[0].Load(), byRtr[1].Load())
	}
	t.Logf("router 0 handled %d, router 1 handled %d", byRtr[0].Load(), byRtr[1].Load())
}

type dlqEntry struct {
	header nats.Header
	data   []byte
}

func dlqMessages(t *testing.T, js jetstream.JetStream) []dlqEntry {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, bus.StreamDLQ, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []dlqEntry
	batch, err := cons.FetchNoWait(1000)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		out = append(out, dlqEntry{m.Headers(), m.Data()})
	}
	return out
}

// A handler that always fails: after MaxDeliver the message is in DLQ with the reason, and
// gone from its source stream — for a work queue and for a limits (replay) stream.
func TestAlwaysFailingHandlerDeadLetters(t *testing.T) {
	for _, tc := range []struct{ stream, subject string }{
		{bus.StreamCMDB, bus.CMDBIngestSubject(3)},
		{bus.StreamEvents, bus.EventSubject("dc1", "syslog")},
	} {
		t.Run(tc.stream, func(t *testing.T) {
			filter := tc.subject
			h, topo := newHub(t, bus.ConsumerSpec{Stream: tc.stream, Name: "failing", Filters: []string{filter}, MaxDeliver: 3})
			var calls atomic.Int64
			r, err := bus.NewRouter(h.nc, h.js, bus.RouterConfig{Service: "cmdb", Topology: topo, Retries: 1, RetryInitial: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			_ = r.Handle("failing", "failing", func(*message.Message) error { calls.Add(1); return errBoom })
			runRouter(t, r)
			pub := bus.NewPublisher(h.js, "/test", nil)
			if _, err := pub.Publish(context.Background(), tc.subject, envelope.Meta{}, event(1)); err != nil {
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, wantMsgs(h.js, bus.StreamDLQ, 1))
			eventually(t, 5*time.Second, wantMsgs(h.js, tc.stream, 0))
			d := dlqMessages(t, h.js)[0]
			if got := d.header.Get(bus.HeaderDLQCode); got != bus.CodeMaxDeliveries {
				t.Fatalf("code %q", got)
			}
			reason := d.header.Get(bus.HeaderDLQReason)
			if !strings.Contains(reason, "boom") || !strings.Contains(reason, "3 deliveries") {
				t.Fatalf("reason %q does not say what failed", reason)
			}
			if d.header.Get(bus.HeaderDLQSubject) != tc.subject || d.header.Get(bus.HeaderDLQStream) != tc.stream ||
				d.header.Get(bus.HeaderDLQSeq) != "1" || d.header.Get(bus.HeaderDLQDeliveries) != "3" {
				t.Fatalf("origin headers wrong: %v", d.header)
			}
			if d.header.Get(envelope.HeaderType) != envelope.TypeEvent {
				t.Fatalf("original headers lost: %v", d.header)
			}
			// 3 deliveries × (1 try + 1 in-process retry)
			if c := calls.Load(); c != 6 {
				t.Fatalf("handler called %d times, want 6", c)
			}
		})
	}
}

// Undecodable messages go straight to DLQ with a decode reason: no redelivery, no crash,
// and the consumer keeps going.
func TestDecodeFailuresDeadLetterAtOnce(t *testing.T) {
	h, topo := newHub(t, bus.ConsumerSpec{Stream: bus.StreamEvents, Name: "corr", Filters: []string{"event.>"}})
	var good atomic.Int64
	r, _ := bus.NewRouter(h.nc, h.js, bus.RouterConfig{Service: "correlation", Topology: topo})
	_ = r.Handle("events", "corr", bus.Decoded(func(_ context.Context, _ envelope.Meta, e *envelope.Event) error {
		good.Add(1)
		return nil
	}))
	runRouter(t, r)
	ctx := context.Background()
	pub := bus.NewPublisher(h.js, "/test", nil)
	// Not JSON, with valid headers.
	hdr, _, _ := envelope.Encode(envelope.Meta{Source: "/t"}, event(1))
	if _, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: "event.dc1.bad", Header: hdr, Data: []byte("{not json")}); err != nil {
		t.Fatal(err)
	}
	// Unknown ce-type.
	hdr2, data2, _ := envelope.Encode(envelope.Meta{Source: "/t"}, event(2))
	hdr2[envelope.HeaderType] = []string{"acme.unknown.v1"}
	hdr2[nats.MsgIdHdr] = []string{"x2"}
	if _, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: "event.dc1.bad", Header: hdr2, Data: data2}); err != nil {
		t.Fatal(err)
	}
	// No headers at all.
	if _, err := h.js.Publish(ctx, "event.dc1.raw", []byte(`{"hello":1}`)); err != nil {
		t.Fatal(err)
	}
	// And a good one after them: the consumer keeps going.
	if _, err := pub.Publish(ctx, "event.dc1.good", envelope.Meta{}, event(3)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, wantMsgs(h.js, bus.StreamDLQ, 3))
	eventually(t, 5*time.Second, func() error {
		if good.Load() != 1 {
			return fmt.Errorf("good handled %d", good.Load())
		}
		return nil
	})
	for _, d := range dlqMessages(t, h.js) {
		if d.header.Get(bus.HeaderDLQCode) != bus.CodeDecode || !strings.HasPrefix(d.header.Get(bus.HeaderDLQReason), "decode: ") {
			t.Fatalf("want decode code and reason, got %v", d.header)
		}
		if d.header.Get(bus.HeaderDLQDeliveries) != "1" {
			t.Fatalf("decode failure was redelivered: %v", d.header.Get(bus.HeaderDLQDeliveries))
		}
	}
	// Only the good message remains in the stream (events are kept for replay).
	eventually(t, 5*time.Second, wantMsgs(h.js, bus.StreamEvents, 1))
}

// A Permanent error skips the retries and the redeliveries.
func TestPermanentErrorDeadLettersOnFirstDelivery(t *testing.T) {
	h, topo := newHub(t, bus.ConsumerSpec{Stream: bus.StreamEvents, Name: "corr", Filters: []string{"event.>"}})
	var calls atomic.Int64
	r, _ := bus.NewRouter(h.nc, h.js, bus.RouterConfig{Service: "correlation", Topology: topo})
	_ = r.Handle("events", "corr", func(*message.Message) error {
		calls.Add(1)
		return bus.Permanent(errors.New("site dc9 does not exist"))
	})
	runRouter(t, r)
	_, _ = bus.NewPublisher(h.js, "/t", nil).Publish(context.Background(), "event.dc1.x", envelope.Meta{}, event(1))
	eventually(t, 10*time.Second, wantMsgs(h.js, bus.StreamDLQ, 1))
	d := dlqMessages(t, h.js)[0]
	if d.header.Get(bus.HeaderDLQCode) != bus.CodePermanent || !strings.Contains(d.header.Get(bus.HeaderDLQReason), "dc9") {
		t.Fatalf("got %v", d.header)
	}
	if calls.Load() != 1 {
		t.Fatalf("permanent error retried: %d calls", calls.Load())
	}
}

// A handler panic is recovered, retried, and the router survives.
func TestPanicIsRecovered(t *testing.T) {
	h, topo := newHub(t, bus.ConsumerSpec{Stream: bus.StreamEvents, Name: "corr", Filters: []string{"event.>"}})
	var calls atomic.Int64
	r, _ := bus.NewRouter(h.nc, h.js, bus.RouterConfig{Service: "correlation", Topology: topo, RetryInitial: time.Millisecond})
	_ = r.Handle("events", "corr", func(*message.Message) error {
		if calls.Add(1) == 1 {
			panic("first time")
		}
		return nil
	})
	runRouter(t, r)
	_, _ = bus.NewPublisher(h.js, "/t", nil).Publish(context.Background(), "event.dc1.x", envelope.Meta{}, event(1))
	eventually(t, 10*time.Second, func() error {
		if calls.Load() < 2 {
			return fmt.Errorf("calls %d", calls.Load())
		}
		return nil
	})
	if n := streamMsgs(t, h.js, bus.StreamDLQ); n != 0 {
		t.Fatalf("recovered message dead-lettered")
	}
}

// A consumer whose last delivery is never settled (the process died): the max-deliveries
// advisory moves it to the DLQ.
func TestMaxDeliveriesAdvisoryDeadLetters(t *testing.T) {
	spec := bus.ConsumerSpec{Stream: bus.StreamCMDB, Name: "crashy", Filters: []string{"cmdb.ingest.>"}, MaxDeliver: 2, AckWait: 300 * time.Millisecond}
	h, _ := newHub(t, spec)
	dl := bus.NewDeadLetterer(h.js, "cmdb", slogDiscard(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() { watchDone <- dl.WatchMaxDeliveries(ctx, h.nc, []bus.ConsumerSpec{spec}) }()
	defer func() { cancel(); <-watchDone }()
	time.Sleep(50 * time.Millisecond) // let the subscription register
	_, _ = bus.NewPublisher(h.js, "/t", nil).Publish(ctx, bus.CMDBIngestSubject(1), envelope.Meta{}, event(1))
	cons, err := h.js.Consumer(ctx, bus.StreamCMDB, "crashy")
	if err != nil {
		t.Fatal(err)
	}
	// Take it twice and never answer, like a handler that crashes each time; the third pull
	// is the restarted process asking for more, which is when the server gives up on it.
	for range 3 {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for range b.Messages() {
		}
	}
	eventually(t, 10*time.Second, wantMsgs(h.js, bus.StreamDLQ, 1))
	eventually(t, 5*time.Second, wantMsgs(h.js, bus.StreamCMDB, 0))
	d := dlqMessages(t, h.js)[0]
	if d.header.Get(bus.HeaderDLQCode) != bus.CodeMaxDeliveries {
		t.Fatalf("got %v", d.header)
	}
}

// The consumer span is in the same trace as the producer span.
func TestTraceCrossesTheBus(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := trace.NewTracerProvider(trace.WithSpanProcessor(rec))
	h, topo := newHub(t, bus.ConsumerSpec{Stream: bus.StreamEvents, Name: "corr", Filters: []string{"event.>"}})
	got := make(chan envelope.Meta, 1)
	r, _ := bus.NewRouter(h.nc, h.js, bus.RouterConfig{Service: "correlation", Topology: topo, Tracer: tp})
	_ = r.Handle("events", "corr", bus.Decoded(func(_ context.Context, m envelope.Meta, _ *envelope.Event) error {
		got <- m
		return nil
	}))
	runRouter(t, r)
	ctx, parent := tp.Tracer("test").Start(context.Background(), "discovery run")
	meta := envelope.Meta{Run: "run-42"}
	if _, err := bus.NewPublisher(h.js, "/t", tp).Publish(ctx, "event.dc1.x", meta, event(1)); err != nil {
		t.Fatal(err)
	}
	parent.End()
	select {
	case m := <-got:
		if m.Run != "run-42" {
			t.Fatalf("outpost-run lost: %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not consumed")
	}
	eventually(t, 5*time.Second, func() error {
		var prod, cons sdkSpan
		for _, s := range rec.Ended() {
			switch s.Name() {
			case "send event.dc1.x":
				prod = s
			case "process event.dc1.x":
				cons = s
			}
		}
		if prod == nil || cons == nil {
			return fmt.Errorf("spans missing: %d ended", len(rec.Ended()))
		}
		if prod.SpanContext().TraceID() != cons.SpanContext().TraceID() {
			return fmt.Errorf("consumer trace %s != producer trace %s", cons.SpanContext().TraceID(), prod.SpanContext().TraceID())
		}
		if cons.Parent().SpanID() != prod.SpanContext().SpanID() {
			return fmt.Errorf("consumer span is not a child of the producer span")
		}
		return nil
	})
}

type sdkSpan = trace.ReadOnlySpan

// Provisioning twice is a no-op, and the stream limits come from config.
func TestProvisionIsIdempotent(t *testing.T) {
	h, topo := newHub(t)
	ctx := context.Background()
	if err := bus.Provision(ctx, h.js, topo); err != nil {
		t.Fatalf("second provision: %v", err)
	}
	lim := bus.DefaultLimits()
	lim.ResultsMaxAge = time.Hour
	if err := bus.Provision(ctx, h.js, bus.DefaultTopology(lim)); err != nil {
		t.Fatal(err)
	}
	st, _ := h.js.Stream(ctx, bus.StreamResults)
	info, _ := st.Info(ctx)
	if info.Config.MaxAge != time.Hour {
		t.Fatalf("limit not applied: %v", info.Config.MaxAge)
	}
	for _, kv := range []string{bus.KVAgents, bus.KVSites, bus.KVRuns, bus.KVLeases} {
		if _, err := h.js.KeyValue(ctx, kv); err != nil {
			t.Fatalf("kv %s: %v", kv, err)
		}
	}
	names := h.js.StreamNames(ctx)
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	if len(got) < 7 {
		t.Fatalf("streams: %v", got)
	}
}

// Request/reply endpoints: JSON in and out, errors with their code, replicas in a queue group.
func TestServiceEndpoints(t *testing.T) {
	h, _ := newHub(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type echoReq struct {
		Msg string `json:"msg"`
	}
	var served [2]atomic.Int64
	for i := range 2 {
		svc, err := bus.AddService(ctx, h.nc, bus.ServiceConfig{Name: "cmdb", Version: "0.1.0", Endpoints: map[string]bus.Endpoint{
			"echo": bus.JSON(func(_ context.Context, r echoReq) (any, error) {
				served[i].Add(1)
				if r.Msg == "" {
					return nil, bus.Errorf(400, "msg is empty: give a message")
				}
				return map[string]string{"msg": r.Msg}, nil
			}),
		}})
		if err != nil {
			t.Fatal(err)
		}
		defer svc.Stop()
	}
	for range 20 {
		var out map[string]string
		if err := bus.Request(ctx, h.nc, "cmdb", "echo", echoReq{"hi"}, &out); err != nil || out["msg"] != "hi" {
			t.Fatalf("echo: %v %v", out, err)
		}
	}
	if served[0].Load()+served[1].Load() != 20 {
		t.Fatalf("served %d+%d", served[0].Load(), served[1].Load())
	}
	var se *bus.ServiceError
	if err := bus.Request(ctx, h.nc, "cmdb", "echo", echoReq{}, nil); !errors.As(err, &se) || se.Code != 400 {
		t.Fatalf("want 400, got %v", err)
	}
	if err := bus.Request(ctx, h.nc, "cmdb", "echo", json.RawMessage(`{"bogus":1}`), nil); !errors.As(err, &se) || se.Code != 400 || !strings.Contains(se.Message, "bogus") {
		t.Fatalf("unknown field: want 400 naming it, got %v", err)
	}
	if err := bus.Request(ctx, h.nc, "nosuch", "op", nil, nil); !errors.As(err, &se) || se.Code != 503 {
		t.Fatalf("want 503, got %v", err)
	}
}

// An endpoint with Concurrency serves that many requests at once: four requests all wait
// inside the handler until the fourth arrives (one at a time, the first would wait forever).
func TestServiceEndpointConcurrency(t *testing.T) {
	h, _ := newHub(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var inside atomic.Int64
	all := make(chan struct{})
	ep := bus.JSON(func(ctx context.Context, _ struct{}) (any, error) {
		if inside.Add(1) == 4 {
			close(all)
		}
		select {
		case <-all:
			return map[string]bool{"ok": true}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	ep.Concurrency = 4
	svc, err := bus.AddService(ctx, h.nc, bus.ServiceConfig{Name: "cmdb", Version: "0.1.0", Endpoints: map[string]bus.Endpoint{"wait": ep}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- bus.Request(ctx, h.nc, "cmdb", "wait", struct{}{}, nil) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("request: %v (served one at a time?)", err)
		}
	}
}

// TestHungHandlerIsNacked: a handler that blocks holds its message alive only up to the
// consumer's MaxWork; then the message is nacked and redelivered (here handled on its
// second delivery), the hang is logged, and the consumer — one message at a time, like a
// CMDB partition — moves on to the next message while the hung handler is still blocked.
func TestHungHandlerIsNacked(t *testing.T) {
	spec := bus.ConsumerSpec{Stream: bus.StreamEvents, Name: "hang", Filters: []string{"event.>"},
		AckWait: time.Second, MaxWork: 2 * time.Second, MaxAckPending: 1, MaxDeliver: 3}
	h, topo := newHub(t, spec)
	logs := &logBuf{}
	r, err := bus.NewRouter(h.nc, h.js, bus.RouterConfig{Service: "test", Topology: topo,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var mu sync.Mutex
	handled := map[string][]string{} // event id → deliveries that returned
	err = r.Handle("hang", "hang", func(msg *message.Message) error {
		var e envelope.Event
		if err := json.Unmarshal(msg.Payload, &e); err != nil {
			return err
		}
		n := msg.Metadata.Get(bus.MetaDelivered)
		if e.ID == "e0" && n == "1" {
			<-release // hung: a query on a dead connection
		}
		mu.Lock()
		handled[e.ID] = append(handled[e.ID], n)
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer close(release) // before the router's cleanup: let the hung goroutine end
	runRouter(t, r)
	pub := bus.NewPublisher(h.js, envelope.AgentSource("dc1", "br-1"), nil)
	for i := range 2 {
		if _, err := pub.Publish(context.Background(), bus.EventSubject("dc1", "test"), envelope.Meta{}, event(i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 60*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(handled["e0"]) != "[2]" || fmt.Sprint(handled["e1"]) != "[1]" {
			return fmt.Errorf("handled (event → deliveries): %v", handled)
		}
		return nil
	})
	if !strings.Contains(logs.String(), "handler hung") || !strings.Contains(logs.String(), "consumer=hang") {
		t.Fatalf("the hang was not logged:\n%s", logs.String())
	}
}
