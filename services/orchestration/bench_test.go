package orchestration

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// BenchmarkConcurrentRuns: b.N runs of two probe steps each, started at once by 64
// callers, through the event-sourced engine, an embedded JetStream and the test bridge
// (net/http to a local target). Reports steps/s (a step: record the attempt, publish the
// probe, record it sent, take the result, record it; every run also records its start and
// end and writes two snapshots) and the process's CPU per step — server, bridge and
// target included — which, unlike steps/s, does not depend on how busy the machine is:
// 1/cpu-ms/step is the steps/s one core sustains.
func BenchmarkConcurrentRuns(b *testing.B) {
	h := newHarness(b)
	defer h.startService("r1")()
	host, port := h.web.hostPort()
	h.add(fmt.Sprintf(`
name: bench
steps:
  - {id: a, kind: http_request, site: lab, target: %[1]s, params: {scheme: http, port: %[2]s, path: /}}
  - {id: b, kind: http_request, site: lab, target: %[1]s, needs: [a], params: {scheme: http, port: %[2]s, path: /}}
`, host, port))
	j := h.svc.journal
	w0, b0 := j.writes.Load(), j.batches.Load()
	cpu0 := cpuTime()
	b.ResetTimer()
	start := time.Now()
	// started as a trigger storm starts them: many callers at once
	ids := make([]string, b.N)
	var wg sync.WaitGroup
	var next atomic.Int64
	for range min(b.N, 64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
				var out api.Run
				if err := h.call(api.RunStart.Name, api.RunRequest{Name: "bench"}, &out); err != nil {
					b.Error(err)
					return
				}
				ids[i] = out.ID
			}
		}()
	}
	wg.Wait()
	started := time.Since(start)
	// done when the replica holds no unfinished run (a run leaves it once it ended)
	eventually(h.t, 5*time.Minute, func() error {
		h.svc.mu.Lock()
		n := len(h.svc.runs)
		h.svc.mu.Unlock()
		if n > 0 {
			return fmt.Errorf("%d runs unfinished", n)
		}
		return nil
	})
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	for _, id := range ids {
		if r := h.get(id); r.State != api.RunCompleted {
			b.Fatalf("run %s is %s: %s", id, r.State, r.Reason)
		}
	}
	steps := float64(2 * b.N)
	b.ReportMetric(steps/elapsed.Seconds(), "steps/s")
	b.ReportMetric(float64(cpu.Microseconds())/1000/steps, "cpu-ms/step")
	if n := j.batches.Load() - b0; n > 0 {
		b.ReportMetric(float64(j.writes.Load()-w0)/float64(n), "writes/batch")
	}
	b.Logf("%d runs started in %s, done in %s; CPU %s; journal busy %s", b.N, started.Round(time.Millisecond), elapsed.Round(time.Millisecond), cpu.Round(time.Millisecond), time.Duration(j.busy.Load()).Round(time.Millisecond))
}

// cpuTime is the CPU the process used so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
