package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// benchSetup: a hub and n bridges of site "bench", all separate processes.
func benchSetup(b *testing.B, bridges int, extra ...string) (*testHub, jetstream.JetStream, []*testBridge) {
	b.Helper()
	h := startHub(b, b.TempDir())
	tok := h.addSite(b, "bench", "127.0.0.0/8", true)
	var bs []*testBridge
	for i := range bridges {
		br := startBridge(b, h, "bench", fmt.Sprintf("br%d", i), tok, extra...)
		h.waitStatus(b, br.name, "up")
		bs = append(bs, br)
	}
	_, js := h.serviceConn(b)
	return h, js, bs
}

func sendProbes(b *testing.B, js jetstream.JetStream, n int, prio, delay string) {
	b.Helper()
	pub := bus.NewPublisher(js, envelope.ServiceSource("bench"), nil)
	ctx := context.Background()
	// Asynchronously, acks checked at the end: the bench measures the bridges, not a
	// one-at-a-time publisher.
	for i := range n {
		params, _ := json.Marshal(map[string]any{"msg": strconv.Itoa(i), "delay": delay})
		p := &envelope.Probe{ID: envelope.NewID(), App: "bench", Site: "bench", Priority: prio, Kind: "echo", Capability: "echo",
			Params: params, Deadline: time.Now().Add(10 * time.Minute).UTC()}
		msg, span, err := pub.Message(ctx, bus.ProbeSubject(p.Site, p.Priority, p.Capability, bus.ProbeLane(p.App)), envelope.Meta{ID: p.ID}, p)
		if err != nil {
			b.Fatal(err)
		}
		span.End()
		msg.Header.Set("Nats-TTL", "10m")
		for {
			_, err = js.PublishMsgAsync(msg)
			if err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("probe publish acks missing")
	}
}

// waitResults counts final results on result.bench.> from now on until n arrived.
func resultCounter(b *testing.B, js jetstream.JetStream) (wait func(n int) time.Duration) {
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, bus.StreamResults, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"result.bench.>"}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(it.Stop)
	start := time.Now()
	got := 0
	return func(n int) time.Duration {
		for got < n {
			if _, err := it.Next(jetstream.NextMaxWait(2 * time.Minute)); err != nil {
				b.Fatalf("after %d results: %v", got, err)
			}
			got++
		}
		return time.Since(start)
	}
}

// BenchmarkEchoRoundTrip: probes/s hub → bridge → outbox → hub with one and two bridges.
func BenchmarkEchoRoundTrip(b *testing.B) {
	for _, bridges := range []int{1, 2} {
		b.Run(fmt.Sprintf("bridges=%d", bridges), func(b *testing.B) {
			h, js, bs := benchSetup(b, bridges, "--pool-standard", "64")
			pids := []int{h.proc.pid()}
			for _, br := range bs {
				pids = append(pids, br.proc.pid())
			}
			const n = 10_000
			b.ResetTimer()
			total := time.Duration(0)
			cpu0, hub0 := procsCPU(b, pids), procsCPU(b, pids[:1])
			for range b.N {
				wait := resultCounter(b, js)
				sendProbes(b, js, n, envelope.PriorityStandard, "")
				total += wait(n)
			}
			cpu, hub := procsCPU(b, pids)-cpu0, procsCPU(b, pids[:1])-hub0
			b.ReportMetric(float64(hub.Microseconds())/float64(n*b.N), "hub-cpu-µs/probe")
			// The hub's peak resident memory: what a GOGC change trades its GC CPU against.
			b.ReportMetric(float64(procKB(b, h.proc.pid(), "VmHWM"))/1024, "hub-peak-RSS-MB")
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "probes/s")
			// CPU time of hub and bridges per probe: what the work costs, far less sensitive
			// than wall time to other load on a shared machine.
			b.ReportMetric(float64(cpu.Microseconds())/float64(n*b.N), "cpu-µs/probe")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkInteractiveLatency: p50/p99 of an interactive echo (publish → result in RESULTS)
// while slow standard probes keep the standard pool saturated.
//
// Each sample is also split at timestamps taken on the way (hub, bridge and bench share one
// clock on this machine): "pub" is the PROBES publish and its ack; "in" the delivery to the
// bridge's interactive pull up to the probe's start (decode, executed-store lookup); "out"
// from the bridge's finish until the hub's RESULTS stored the result (encode, executed
// record, outbox store, forwarder, the account boundary); "deliver" the RESULTS delivery to
// the bench; "run" the rest (the echo itself). The tail-* figures are the means of each part
// over the samples at or above the p99 (they add up to tail-total): where the tail is spent.
func BenchmarkInteractiveLatency(b *testing.B) {
	h, js, _ := benchSetup(b, 1, "--pool-standard", "4")
	_ = h
	sendProbes(b, js, 400, envelope.PriorityStandard, "1s") // 100 s of standard work
	time.Sleep(500 * time.Millisecond)
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, bus.StreamResults, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"result.lat.>"}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		b.Fatal(err)
	}
	it, _ := cons.Messages()
	defer it.Stop()
	pub := bus.NewPublisher(js, envelope.ServiceSource("bench"), nil)
	// 3,000 samples a round, after 50 unmeasured ones (connections, consumers and caches
	// warm): the p99 is then the 30th-worst sample, not the 10th (1,000 samples) or the
	// 2nd (200, which moved by 30 % between identical runs on this machine).
	const warm, n = 50, 3000
	type sample struct{ total, pub, in, out, deliver time.Duration }
	var lat []sample
	b.ResetTimer()
	for range b.N {
		lat = lat[:0]
		for i := range warm + n {
			params, _ := json.Marshal(map[string]any{"msg": strconv.Itoa(i)})
			p := &envelope.Probe{ID: envelope.NewID(), App: "lat", Site: "bench", Priority: envelope.PriorityInteractive, Kind: "echo",
				Capability: "echo", Params: params, Deadline: time.Now().Add(time.Minute).UTC()}
			t0 := time.Now()
			if err := bus.PublishProbe(ctx, js, pub, p); err != nil {
				b.Fatal(err)
			}
			tp := time.Now()
			m, err := it.Next(jetstream.NextMaxWait(30 * time.Second))
			if err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if i < warm {
				continue
			}
			_, r, err := envelope.DecodeInto[*envelope.Result](m.Headers(), m.Data())
			if err != nil {
				b.Fatalf("result of sample %d: %v", i, err)
			}
			md, err := m.Metadata()
			if err != nil {
				b.Fatalf("result of sample %d: %v", i, err)
			}
			lat = append(lat, sample{total: t1.Sub(t0), pub: tp.Sub(t0), in: r.Started.Sub(tp), out: md.Timestamp.Sub(r.Finished),
				deliver: t1.Sub(md.Timestamp)})
		}
	}
	slices.SortFunc(lat, func(x, y sample) int { return cmp.Compare(x.total, y.total) })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	p99 := len(lat) * 99 / 100
	b.ReportMetric(ms(lat[len(lat)/2].total), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*9/10].total), "p90-ms")
	b.ReportMetric(ms(lat[p99].total), "p99-ms")
	tail := lat[p99:]
	part := func(name string, f func(sample) time.Duration) {
		var sum time.Duration
		for _, s := range tail {
			sum += f(s)
		}
		b.ReportMetric(ms(sum/time.Duration(len(tail))), "tail-"+name+"-ms")
	}
	part("total", func(s sample) time.Duration { return s.total })
	part("pub", func(s sample) time.Duration { return s.pub })
	part("in", func(s sample) time.Duration { return s.in })
	part("run", func(s sample) time.Duration { return s.total - s.pub - s.in - s.out - s.deliver })
	part("out", func(s sample) time.Duration { return s.out })
	part("deliver", func(s sample) time.Duration { return s.deliver })
	b.ReportMetric(0, "ns/op")
}

// BenchmarkBridgeStartAndIdle: time from exec to "bridge ready" for an approved bridge, and
// its resident memory once idle.
func BenchmarkBridgeStartAndIdle(b *testing.B) {
	h := startHub(b, b.TempDir())
	tok := h.addSite(b, "bench", "127.0.0.0/8", true)
	first := startBridge(b, h, "bench", "br0", tok)
	h.waitStatus(b, "br0", "up")
	first.proc.kill(b)
	var ready []time.Duration
	var rssKB int64
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		p := start(b, "outpost-bridge", "--hub", "nats://"+h.nats, "--site", "bench", "--name", "br0", "--data", first.dir)
		eventually(b, 30*time.Second, func() error {
			if !bytes.Contains(p.log.Bytes(), []byte("bridge ready")) {
				return fmt.Errorf("not ready")
			}
			return nil
		})
		ready = append(ready, time.Since(t0))
		b.StopTimer()
		time.Sleep(3 * time.Second) // idle: heartbeats only
		rssKB = procKB(b, p.pid(), "VmRSS")
		p.kill(b)
		b.StartTimer()
	}
	slices.Sort(ready)
	b.ReportMetric(float64(ready[len(ready)/2].Microseconds())/1000, "ready-ms")
	b.ReportMetric(float64(rssKB)/1024, "idle-RSS-MB")
	b.ReportMetric(0, "ns/op")
}

// procKB reads a kB figure of a process from /proc/PID/status: VmRSS, VmHWM (peak RSS)…
func procKB(b *testing.B, pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// procsCPU is the user+system CPU time the processes used so far (/proc/<pid>/stat).
func procsCPU(b *testing.B, pids []int) time.Duration {
	b.Helper()
	var d time.Duration
	for _, pid := range pids {
		d += procCPU(b, pid)
	}
	return d
}

// BenchmarkHubIdle: the hub's CPU while nothing happens, alone and with one approved bridge
// serving every application (3 pull consumers, one per priority, since probe groups)
// waiting for work — the standing cost of a site is the difference. BENCH_IDLE (default 60s)
// is the measured span.
func BenchmarkHubIdle(b *testing.B) {
	span := time.Minute
	if v := os.Getenv("BENCH_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("BENCH_IDLE: %v", err)
		}
		span = d
	}
	for _, n := range []int{0, 1} {
		b.Run(fmt.Sprintf("bridges=%d", n), func(b *testing.B) {
			h, _, _ := benchSetup(b, n)
			time.Sleep(5 * time.Second) // settled: every pull loop has its consumer
			b.ResetTimer()
			var used time.Duration
			for range b.N {
				c0 := procsCPU(b, []int{h.proc.pid()})
				time.Sleep(span)
				used += procsCPU(b, []int{h.proc.pid()}) - c0
			}
			b.ReportMetric(float64(used.Milliseconds())/(float64(b.N)*span.Seconds()), "hub-cpu-ms/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
