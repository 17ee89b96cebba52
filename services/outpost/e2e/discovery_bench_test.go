package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/lab"
)

// BenchmarkDiscoveryLab: a whole discovery of a lab, from the start request to the run's
// completed state (every host classified and explored, every payload's CMDB receipt in),
// with `outpost up` and `outpost-bridge` as separate processes and the lab in this one.
// Reports the wall time, the hub's and the bridge's peak RSS (VmHWM) and what was found.
func BenchmarkDiscoveryLab(b *testing.B) {
	for _, c := range []struct {
		name  string
		cidr  string
		hosts int
	}{
		{"hosts=60", "127.77.150.0/24", 60},
		{"hosts=1000", "127.77.160.0/20", 1000},
	} {
		b.Run(c.name, func(b *testing.B) {
			l, err := lab.Start(context.Background(), lab.Config{Range: c.cidr, Hosts: c.hosts, Seed: 7})
			if err != nil {
				b.Fatalf("lab: %v", err)
			}
			defer l.Close()
			m := l.Manifest()
			alive := 0
			for _, h := range m.Hosts {
				if h.Class != "" {
					alive++
				}
			}
			h := startHub(b, b.TempDir())
			tok := h.addSite(b, "lab", c.cidr, true)
			br := startBridge(b, h, "lab", "br1", tok)
			h.waitStatus(b, "br1", "up")
			for _, lc := range m.StoreCredentials("lab") {
				h.mustAPI(b, "POST", "/api/v1/credentials", map[string]any{"name": lc.Name, "type": lc.Type, "site": "lab",
					"username": lc.Username, "secret": lc.Secret, "fields": lc.Fields}, nil)
			}
			b.ResetTimer()
			var wall time.Duration
			var r discoveryRun
			for range b.N {
				t0 := time.Now()
				id := startDiscovery(b, h, "lab", c.cidr)
				r = waitDiscovery(b, h, id, 10*time.Minute)
				wall = time.Since(t0)
				if r.State != "completed" {
					b.Fatalf("run %s: %s %s", id, r.State, r.Reason)
				}
			}
			b.StopTimer()
			b.ReportMetric(wall.Seconds(), "s/run")
			b.ReportMetric(float64(procKB(b, h.proc.pid(), "VmHWM"))/1024, "hub-peak-RSS-MB")
			b.ReportMetric(float64(procKB(b, br.proc.pid(), "VmHWM"))/1024, "bridge-peak-RSS-MB")
			b.ReportMetric(float64(r.Counters.Addresses), "addresses")
			b.ReportMetric(float64(alive), "manifest-hosts")
			b.ReportMetric(float64(r.Counters.Classified), "classified")
			b.ReportMetric(float64(r.Counters.CIsCreated+r.Counters.CIsUpdated+r.Counters.CIsUnchanged), "CIs")
			b.ReportMetric(0, "ns/op")
		})
	}
}
