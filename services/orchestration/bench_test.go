package orchestration

import (
	"fmt"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// BenchmarkConcurrentRuns: b.N runs of two probe steps each, all started at once, through
// the event-sourced engine, an embedded JetStream and the test bridge (net/http to a local
// target). Reports steps/s (a step: record the attempt, publish the probe, record it
// sent, take the result, record it).
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
	b.ResetTimer()
	start := time.Now()
	ids := make([]string, b.N)
	for i := range b.N {
		ids[i] = h.run("bench", nil).ID
	}
	for _, id := range ids {
		eventually(h.t, 5*time.Minute, func() error {
			if r := h.get(id); r.State != api.RunCompleted {
				return fmt.Errorf("run %s", r.State)
			}
			return nil
		})
	}
	b.ReportMetric(float64(2*b.N)/time.Since(start).Seconds(), "steps/s")
}
