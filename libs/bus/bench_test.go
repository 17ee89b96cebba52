package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// benchMsgs per iteration: big enough that start-up costs vanish.
const benchMsgs = 50_000

// BenchmarkThroughput compares publish→consume through libs/bus (envelope headers, trace
// context, watermill Router with its middleware chain, strict decoding) with raw nats.go
// jetstream (async publish, Consume callback, json.Unmarshal, Ack) on the same embedded
// server, with the same messages on the wire (body and CloudEvents headers, Nats-Msg-Id
// included, so the server's dedup work is the same): the ratio is the library's overhead.
// Run both in one `go test -bench Throughput` so the ratio is from the same machine state.
func BenchmarkThroughput(b *testing.B) {
	b.Run("raw", func(b *testing.B) { benchThroughput(b, rawPipe) })
	b.Run("bus", func(b *testing.B) { benchThroughput(b, busPipe) })
}

type pipe func(b *testing.B, h *hub, topo bus.Topology, consumer string, n int) time.Duration

func benchThroughput(b *testing.B, run pipe) {
	var total, cpu time.Duration
	msgs := 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		name := fmt.Sprintf("bench%d", i)
		h, topo := newHub(b, bus.ConsumerSpec{Stream: bus.StreamEvents, Name: name, Filters: []string{"event.>"}, MaxAckPending: 10_000})
		runtime.GC()
		c0 := cpuTime()
		b.StartTimer()
		total += run(b, h, topo, name, benchMsgs)
		b.StopTimer()
		cpu += cpuTime() - c0
		msgs += benchMsgs
	}
	b.ReportMetric(float64(msgs)/total.Seconds(), "msgs/s")
	// CPU time of the whole process (client and embedded server) per message: steadier than
	// wall time on a shared machine, and what a busier hub would run out of first.
	b.ReportMetric(float64(cpu.Microseconds())/float64(msgs), "cpu-µs/msg")
	b.ReportMetric(0, "ns/op")
}

func benchEvent(i int) *envelope.Event {
	return &envelope.Event{ID: fmt.Sprintf("e%d", i), Site: "dc1", Source: "bench", Type: "metric", Node: "web-01",
		Metric: "cpu", Severity: "info", Message: "cpu at 42%", Time: time.Unix(1700000000, 0).UTC()}
}

func rawPipe(b *testing.B, h *hub, _ bus.Topology, consumer string, n int) time.Duration {
	ctx := context.Background()
	cons, err := h.js.Consumer(ctx, bus.StreamEvents, consumer)
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var e envelope.Event
		_ = json.Unmarshal(m.Data(), &e)
		_ = m.Ack()
		if got.Add(1) == int64(n) {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	_, pjs := h.conn(b, "raw-pub")
	for i := range n {
		// The same bytes on the wire as libs/bus sends: body and CloudEvents headers.
		data, _ := json.Marshal(benchEvent(i))
		meta := envelope.NewMeta(envelope.TypeEvent, "/sites/dc1/agents/br-1")
		msg := &nats.Msg{Subject: bus.EventSubject("dc1", "bench"), Header: meta.Headers(nil), Data: data}
		for {
			// A full async window is backpressure: wait, as libs/bus's Batch does.
			_, err := pjs.PublishMsgAsync(msg, jetstream.WithStallWait(time.Second))
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				b.Fatal(err)
			}
		}
	}
	<-pjs.PublishAsyncComplete()
	<-done
	return time.Since(start)
}

func busPipe(b *testing.B, h *hub, topo bus.Topology, consumer string, n int) time.Duration {
	var got atomic.Int64
	done := make(chan struct{})
	r, err := bus.NewRouter(h.nc, h.js, bus.RouterConfig{Service: "bench", Topology: topo, MaxInFlight: 1024})
	if err != nil {
		b.Fatal(err)
	}
	_ = r.Handle("bench", consumer, bus.Decoded(func(_ context.Context, _ envelope.Meta, _ *envelope.Event) error {
		if got.Add(1) == int64(n) {
			close(done)
		}
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	start := time.Now()
	go func() { runDone <- r.Run(ctx) }()
	<-r.Running()
	_, pjs := h.conn(b, "bus-pub")
	pub := bus.NewPublisher(pjs, envelope.AgentSource("dc1", "br-1"), nil)
	batch := pub.Batch()
	for i := range n {
		if err := batch.Add(ctx, bus.EventSubject("dc1", "bench"), envelope.Meta{}, benchEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := batch.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	<-done
	elapsed := time.Since(start)
	cancel()
	<-runDone
	return elapsed
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
