package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// BenchmarkSyslogBurst: a burst of syslog lines over TCP to a site bridge's collector, through
// the whole pipeline — collector, batch, the bridge's outbox, the WAN link to the hub's
// EVENTS, router, partitions — to alerts counted on the hub. Events/s from the first line
// sent to the last event counted, and CPU of the hub and bridge processes per event (the
// figure to trust on a shared machine). batch=500 is the default (500 lines, 256 KiB or 25 ms
// a stored message); batch=1 stores every line on its own, as before batching.
// BENCH_SYSLOG_EVENTS (default 50,000) lines a round, over 100 alerts.
func BenchmarkSyslogBurst(b *testing.B) {
	n := 50_000
	if v, err := strconv.Atoi(os.Getenv("BENCH_SYSLOG_EVENTS")); err == nil && v > 0 {
		n = v
	}
	for _, batch := range []int{500, 1} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			h := startHub(b, b.TempDir())
			tok := h.addSite(b, "bench", "127.77.63.0/24", true)
			addr := freeAddr(b)
			br := startBridge(b, h, "bench", "br-syslog", tok, "--collect-syslog", addr, "--collect-batch-max", strconv.Itoa(batch))
			h.waitStatus(b, br.name, "up")
			pids := []int{h.proc.pid(), br.proc.pid()}
			const keys = 100
			var burst strings.Builder
			for i := range n {
				fmt.Fprintf(&burst, "<11>1 2026-03-02T09:00:00Z burst-%03d app - - - burst line\n", i%keys)
			}
			counted := func() int64 {
				var out api.AlertsListResponse
				code, body := h.api(b, http.MethodGet, "/api/v1/alerts?limit=1000", nil)
				if code != http.StatusOK {
					b.Fatalf("alerts: %d %s", code, body)
				}
				if err := json.Unmarshal(body, &out); err != nil {
					b.Fatal(err)
				}
				var sum int64
				for _, a := range out.Items {
					if strings.HasPrefix(a.Node, "burst-") {
						sum += int64(a.Count)
					}
				}
				return sum
			}
			var total, cpu time.Duration
			b.ResetTimer()
			for i := range b.N {
				before := counted()
				cpu0 := procsCPU(b, pids)
				start := time.Now()
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := conn.Write([]byte(burst.String())); err != nil {
					b.Fatal(err)
				}
				conn.Close()
				sent := time.Since(start)
				deadline := time.Now().Add(10 * time.Minute)
				for got := counted() - before; got < int64(n); got = counted() - before {
					if time.Now().After(deadline) {
						b.Fatalf("round %d: %d of %d events counted in alerts after 10 minutes", i, got, n)
					}
					time.Sleep(100 * time.Millisecond)
				}
				total += time.Since(start)
				cpu += procsCPU(b, pids) - cpu0
				b.Logf("round %d: sent in %s, counted in %s", i, sent, time.Since(start))
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "events/s")
			perEvent := float64(cpu.Microseconds()) / float64(n*b.N)
			b.ReportMetric(perEvent, "cpu-µs/event")
			b.ReportMetric(2e6/perEvent, "events/s-at-2-cores")
			b.ReportMetric(0, "ns/op")
		})
	}
}
