package e2e

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
)

// workflowBench: a hub and one bridge of site "bench" (separate processes, expedited pool
// large enough not to be the bound) and a connection to svc.orchestration.
func workflowBench(b *testing.B, yaml string) (*testHub, *nats.Conn, *testBridge) {
	b.Helper()
	h, _, bs := benchSetup(b, 1, "--pool-expedited", "500")
	nc, _ := h.serviceConn(b)
	var added api.AddResponse
	if err := bus.Request(context.Background(), nc, api.Service, api.Add.Name, api.AddRequest{File: "bench.yaml", YAML: yaml}, &added); err != nil {
		b.Fatal(err)
	}
	return h, nc, bs[0]
}

func benchRun(b *testing.B, nc *nats.Conn, name string) string {
	var r api.Run
	if err := bus.Request(context.Background(), nc, api.Service, api.RunStart.Name, api.RunRequest{Name: name}, &r); err != nil {
		b.Fatal(err)
	}
	return r.ID
}

func benchWait(b *testing.B, nc *nats.Conn, id string) api.Run {
	var r api.Run
	eventually(b, 5*time.Minute, func() error {
		r = api.Run{}
		if err := bus.Request(context.Background(), nc, api.Service, api.RunGet.Name, api.RunIDRequest{ID: id}, &r); err != nil {
			return err
		}
		if r.State == api.RunRunning {
			return fmt.Errorf("run %s is running", id)
		}
		return nil
	})
	if r.State != api.RunCompleted {
		b.Fatalf("run %s: %s (%s)", id, r.State, r.Reason)
	}
	return r
}

// BenchmarkWorkflowStepLatency: one echo step per run, one run at a time, through the hub
// (`outpost up`) and a real bridge: the step's latency from its attempt starting (recorded,
// probe published) to its result taken, as the hub's run records it. 20 unmeasured runs,
// then 300 per round.
func BenchmarkWorkflowStepLatency(b *testing.B) {
	_, nc, _ := workflowBench(b, `
name: one
steps:
  - {id: echo, kind: echo, site: bench, params: {msg: hi}}
`)
	const warm, n = 20, 300
	// lat is the whole; send (attempt started → its probe accepted by the bus: the hub's
	// two journal writes) and back (probe accepted → result taken: the bridge, its outbox
	// and the results consumer) say where a tail comes from
	var lat, send, back []time.Duration
	b.ResetTimer()
	for range b.N {
		lat, send, back = lat[:0], send[:0], back[:0]
		for i := range warm + n {
			r := benchWait(b, nc, benchRun(b, nc, "one"))
			att := r.Step("echo").Attempts[0]
			if i >= warm {
				lat = append(lat, att.Finished.Sub(att.Started))
				if att.Sent != nil {
					send = append(send, att.Sent.Sub(att.Started))
					back = append(back, att.Finished.Sub(*att.Sent))
				}
			}
		}
	}
	pct := func(d []time.Duration, p int) float64 {
		if len(d) == 0 {
			return 0
		}
		slices.Sort(d)
		return float64(d[len(d)*p/100].Microseconds()) / 1000
	}
	b.ReportMetric(pct(lat, 50), "p50-ms")
	b.ReportMetric(pct(lat, 99), "p99-ms")
	b.ReportMetric(pct(send, 99), "p99-send-ms")
	b.ReportMetric(pct(back, 99), "p99-back-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkWorkflowThroughput: 1,000 runs of two echo steps each, started at once by 64
// callers, through the hub and a real bridge: steps/s from the first start to the last run
// completed, the hub's and the bridge's CPU per step (polling included), and the hub's
// peak RSS (VmHWM) at that load.
func BenchmarkWorkflowThroughput(b *testing.B) {
	h, nc, br := workflowBench(b, `
name: two
steps:
  - {id: a, kind: echo, site: bench, params: {msg: a}}
  - {id: b, kind: echo, site: bench, needs: [a], params: {msg: b}}
`)
	benchWait(b, nc, benchRun(b, nc, "two")) // warm
	const runs = 1000
	var elapsed time.Duration
	hub0, br0 := procsCPU(b, []int{h.proc.pid()}), procsCPU(b, []int{br.proc.pid()})
	b.ResetTimer()
	// runs end as their histories say: a subscription to the records costs the hub nothing
	// (polling run_get would, and be measured)
	var completed, failed atomic.Int64
	sub, err := nc.Subscribe("wf.run.*.events", func(m *nats.Msg) {
		switch {
		case bytes.Contains(m.Data, []byte(`"type":"run.completed"`)):
			completed.Add(1)
		case bytes.Contains(m.Data, []byte(`"type":"run.failed"`)), bytes.Contains(m.Data, []byte(`"type":"run.canceled"`)):
			failed.Add(1)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for n := range b.N {
		ids := make([]string, runs)
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)) - 1; i < runs; i = int(next.Add(1)) - 1 {
					ids[i] = benchRun(b, nc, "two")
				}
			}()
		}
		wg.Wait()
		eventually(b, 5*time.Minute, func() error {
			if f := failed.Load(); f > 0 {
				b.Fatalf("%d runs did not complete", f)
			}
			if c := completed.Load(); c < int64(runs*(n+1)) {
				return fmt.Errorf("%d of %d runs completed", c, runs*(n+1))
			}
			return nil
		})
		elapsed += time.Since(start)
		benchWait(b, nc, ids[runs-1]) // and the API says so
	}
	steps := float64(2 * runs * b.N)
	b.ReportMetric(steps/elapsed.Seconds(), "steps/s")
	// CPU per step: what a step costs the hub (and the bridge), much less sensitive than
	// steps/s to other load on a shared machine
	b.ReportMetric(float64((procsCPU(b, []int{h.proc.pid()})-hub0).Microseconds())/steps, "hub-cpu-µs/step")
	b.ReportMetric(float64((procsCPU(b, []int{br.proc.pid()})-br0).Microseconds())/steps, "bridge-cpu-µs/step")
	b.ReportMetric(float64(procKB(b, h.proc.pid(), "VmHWM"))/1024, "hub-peak-RSS-MB")
	b.ReportMetric(0, "ns/op")
}
