package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/lab"
)

// sharedScan runs a discovery of a lab on a site served by n bridges (separate processes);
// kill > 0 SIGKILLs that bridge (1-based) once the run is scanning. It returns the run, the
// wall time from the start request to completed, and, per bridge, the hosts whose scan
// chunk it ran (from the host logs, as `outpost discovery runs show` prints them).
func sharedScan(t testing.TB, cidr string, hosts, n, kill int) (discoveryRun, time.Duration, map[string]int, lab.Manifest) {
	t.Helper()
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: hosts, Seed: 7})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	m := l.Manifest()
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "lab", cidr, true)
	var bridges []*testBridge
	for i := 1; i <= n; i++ {
		bridges = append(bridges, startBridge(t, h, "lab", fmt.Sprintf("br%d", i), tok))
	}
	for i := 1; i <= n; i++ {
		h.waitStatus(t, fmt.Sprintf("br%d", i), "up")
	}
	for _, lc := range m.StoreCredentials("lab") {
		h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": lc.Name, "type": lc.Type, "site": "lab",
			"username": lc.Username, "secret": lc.Secret, "fields": lc.Fields}, nil)
	}
	t0 := time.Now()
	id := startDiscovery(t, h, "lab", cidr)
	if kill > 0 {
		eventually(t, time.Minute, func() error {
			var r struct {
				State string `json:"state"`
			}
			_, b := h.api(t, "GET", "/api/v1/discovery/runs/"+id, nil)
			_ = json.Unmarshal(b, &r)
			if r.State == "queued" || r.State == "" {
				return fmt.Errorf("run %s", r.State)
			}
			return nil
		})
		_ = bridges[kill-1].proc.cmd.Process.Signal(syscall.SIGKILL)
	}
	r := waitDiscovery(t, h, id, 10*time.Minute)
	wall := time.Since(t0)
	if r.State != "completed" {
		t.Fatalf("run %s: %s %s", id, r.State, r.Reason)
	}
	by := map[string]int{}
	for _, hb := range r.Hosts {
		var v struct {
			Host struct {
				Log []struct {
					Step   string `json:"step"`
					Bridge string `json:"bridge"`
				} `json:"log"`
			} `json:"host"`
		}
		_, b := h.api(t, "GET", "/api/v1/discovery/runs/"+id+"?host="+hb.IP, nil)
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		for _, e := range v.Host.Log {
			if e.Step == "scan" && e.Bridge != "" {
				by[e.Bridge]++
				break
			}
		}
	}
	return r, wall, by, m
}

// TestSiteBridgesShareTheScan: three bridges of one site take the scan chunks of a /22 from
// its shared consumer, one of them SIGKILLed mid-run loses nothing (every live host is
// classified), and the host logs say which bridge scanned what.
func TestSiteBridgesShareTheScan(t *testing.T) {
	t.Parallel()
	r, _, by, m := sharedScan(t, "127.77.168.0/22", 120, 3, 2)
	want := map[string]string{}
	for _, mh := range m.Hosts {
		if mh.Class != "" {
			want[mh.IP] = mh.Class
		}
	}
	got := map[string]bool{}
	for _, hb := range r.Hosts {
		if hb.Class != "" {
			got[hb.IP] = true
		}
	}
	for ip := range want {
		if !got[ip] {
			t.Errorf("%s (%s) lost: not classified after a bridge was killed", ip, want[ip])
		}
	}
	if r.Counters.Addresses != 1022 {
		t.Errorf("%d addresses, want 1022", r.Counters.Addresses)
	}
	scanned := 0
	for _, n := range by {
		scanned += n
	}
	// hosts with open TCP ports (found by the scan; others answered only the SNMP sweep)
	if scanned == 0 || scanned > len(got) {
		t.Errorf("%d hosts name the bridge that scanned them, %d hosts classified", scanned, len(got))
	}
	// Not asserted yet: that the chunks spread over the bridges. The chunks are probes on
	// the site's shared consumer, but a /22 is one chunk at the default ChunkSize (1,024)
	// and a bridge prefetches up to 32 probes (work.go): issue 16 item 5 is open.
	t.Logf("hosts scanned per bridge: %v", by)
}

// BenchmarkSharedScan: the same 1,000-host lab /20 discovered by one and by three bridges
// of its site.
func BenchmarkSharedScan(b *testing.B) {
	for i, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("bridges=%d", n), func(b *testing.B) {
			var wall time.Duration
			var by map[string]int
			for range b.N {
				_, wall, by, _ = sharedScan(b, fmt.Sprintf("127.77.%d.0/20", 80+16*i), 1000, n, 0)
			}
			b.ReportMetric(wall.Seconds(), "s/run")
			b.ReportMetric(float64(len(by)), "bridges-used")
			b.ReportMetric(0, "ns/op")
		})
	}
}
