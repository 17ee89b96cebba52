package correlation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// benchReplica is one replica (8 partitions, default rules, no CMDB, no notifier) on an
// embedded JetStream, as `outpost up` runs it, with its service at hand.
func benchReplica(b *testing.B) (*rig, *service) {
	r := newRig(b)
	r.quiet = true
	svcs := map[string]*service{}
	r.startSvc("bench", func(c *Config) { c.FlushInterval = 50 * time.Millisecond }, svcs)
	s := svcs["bench"]
	eventually(b, 30*time.Second, func() error {
		if n := len(s.owner.Owned()); n != s.cfg.Partitions {
			return fmt.Errorf("%d of %d partitions owned", n, s.cfg.Partitions)
		}
		return nil
	})
	return r, s
}

// eventMsgs are n events over keys dedup keys, per to a message (an EventBatch as the
// bridge's collectors store a burst; 1: one event a message, as a lone syslog line), ready
// to publish (CloudEvents headers, Nats-Msg-Id, as a bridge's outbox forwards them).
func eventMsgs(b *testing.B, r *rig, n, keys, per int, prefix string) []*nats.Msg {
	ctx := context.Background()
	var out []*nats.Msg
	for i := 0; i < n; i += per {
		var body envelope.Body
		batch := &envelope.EventBatch{}
		for j := i; j < min(i+per, n); j++ {
			ev := envelope.Event{ID: envelope.NewID(), Site: "dc1", Source: "webhook", Type: "cpu", Node: fmt.Sprintf("%s-%05d", prefix, j%keys),
				Severity: "major", Message: "load high", Time: t0}
			batch.Events = append(batch.Events, ev)
		}
		body = batch
		if per == 1 {
			body = &batch.Events[0]
		}
		m, span, err := r.pub.Message(ctx, bus.EventSubject("dc1", "webhook"), envelope.Meta{}, body)
		if err != nil {
			b.Fatal(err)
		}
		span.End()
		out = append(out, m)
	}
	return out
}

// publishAll publishes msgs asynchronously (a bounded window of pending acks).
func publishAll(b *testing.B, js jetstream.JetStream, msgs []*nats.Msg) {
	for _, m := range msgs {
		publishOne(b, js, m)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("publish acks did not come")
	}
}

// publishOne publishes asynchronously, waiting while the window of pending acks is full.
func publishOne(b *testing.B, js jetstream.JetStream, m *nats.Msg) {
	for {
		_, err := js.PublishMsgAsync(m)
		if err == nil {
			return
		}
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			b.Fatal(err)
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// BenchmarkPipeline: events/s from publish on EVENTS to alerts written and acknowledged —
// router, partition stream, partition owner, KV — 100,000 events over 1,000 keys a round,
// 100 events a message (a collector's batch) and, for comparison, one event a message.
func BenchmarkPipeline(b *testing.B) {
	for _, per := range []int{100, 1} {
		b.Run(fmt.Sprintf("per_msg=%d", per), func(b *testing.B) { benchPipeline(b, per) })
	}
}

func benchPipeline(b *testing.B, per int) {
	r, s := benchReplica(b)
	const n, keys = 100_000, 1_000
	var total, cpu time.Duration
	for i := range b.N {
		msgs := eventMsgs(b, r, n, keys, per, fmt.Sprintf("r%d", i))
		before := s.applied.Load()
		cpu0 := processCPU()
		start := time.Now()
		publishAll(b, r.js, msgs)
		pubDone := time.Since(start)
		var routedAt time.Duration
		eventually(b, 5*time.Minute, func() error {
			if routedAt == 0 && s.router.routed.Load() >= int64(n*(i+1)) {
				routedAt = time.Since(start)
			}
			if got := s.applied.Load() - before; got < n {
				return fmt.Errorf("%d of %d events applied", got, n)
			}
			return nil
		})
		total += time.Since(start)
		cpu += processCPU() - cpu0
		b.Logf("published in %s, routed in %s, applied in %s", pubDone, routedAt, time.Since(start))
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "events/s")
	// CPU of the whole process (publisher, JetStream server, router, partitions, KV) per
	// event, and what it makes of 2 cores: on a shared machine the wall-clock rate says
	// more about the neighbours than about the pipeline.
	perEvent := float64(cpu.Microseconds()) / float64(n*b.N)
	b.ReportMetric(perEvent, "cpu-µs/event")
	b.ReportMetric(2e6/perEvent, "events/s-at-2-cores")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkEventToAlertLatency: publish of an event to its alert written, for 1,000 probe
// events (each a new key) sent one every 2 ms while a background load of 2,000 events/s
// runs on other keys (a busy hub; the machine shares its 2 cores). Reports p50, p99 and max.
func BenchmarkEventToAlertLatency(b *testing.B) {
	r, s := benchReplica(b)
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
	s.onWrite = func(a *api.Alert) {
		mu.Lock()
		if t, ok := sent[a.Node]; ok && a.Count == 1 {
			lat = append(lat, time.Since(t))
			delete(sent, a.Node)
		}
		mu.Unlock()
	}
	const probes, rate = 1_000, 2_000
	for i := range b.N {
		bg := eventMsgs(b, r, rate*3, 1_000, 1, fmt.Sprintf("bg%d", i))
		pr := eventMsgs(b, r, probes, probes, 1, fmt.Sprintf("probe%d", i))
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { // 2,000 events/s in steps of 10 ms
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for k := 0; k < len(bg) && ctx.Err() == nil; k += rate / 100 {
				for _, m := range bg[k:min(k+rate/100, len(bg))] {
					publishOne(b, r.js, m)
				}
				select {
				case <-t.C:
				case <-ctx.Done():
				}
			}
		})
		time.Sleep(200 * time.Millisecond) // the background load runs before the first probe
		for k, m := range pr {
			node := fmt.Sprintf("probe%d-%05d", i, k)
			mu.Lock()
			sent[node] = time.Now()
			mu.Unlock()
			publishOne(b, r.js, m)
			time.Sleep(2 * time.Millisecond)
		}
		eventually(b, time.Minute, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(sent) > 0 {
				return fmt.Errorf("%d probes not written yet", len(sent))
			}
			return nil
		})
		cancel()
		wg.Wait()
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(0, "ns/op")
}

// processCPU is the user and system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
