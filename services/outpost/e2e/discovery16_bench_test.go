package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/lab"
)

// BenchmarkDiscovery16: a discovery of a whole /16 (127.77.0.0/16: 65,534 addresses, every
// one TCP-scanned and swept with SNMP) where a sparse lab lives — BENCH_D16_HOSTS hosts
// (default 256) spread over the range with a stride of 251 addresses, so they fall in 252
// different /24s and every scan chunk — with `outpost up` and `outpost-bridge` as separate
// processes. The run must complete; the hub's peak RSS (VmHWM) shows its state stays bounded
// by the hosts alive and the probes in flight, not by the range. Run alone: it binds in the
// whole of 127.77.0.0/16.
func BenchmarkDiscovery16(b *testing.B) {
	const cidr = "127.77.0.0/16"
	hosts := 256
	if v, err := strconv.Atoi(os.Getenv("BENCH_D16_HOSTS")); err == nil && v > 0 {
		hosts = v
	}
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: hosts, Stride: 251, Seed: 7})
	if err != nil {
		b.Fatalf("lab: %v", err)
	}
	defer l.Close()
	alive := 0
	for _, h := range l.Manifest().Hosts {
		if h.Class != "" {
			alive++
		}
	}
	h := startHub(b, b.TempDir())
	tok := h.addSite(b, "lab", cidr, true)
	// The bridge's one tcp_scan budget (default 2,000 attempts/s, a cautious LAN setting) is
	// raised as an operator would for a /16 on loopback: the bench measures the hub's memory
	// and the run's completion, not the default rate (about 8 minutes of scanning at it).
	conf := filepath.Join(b.TempDir(), "bridge.yaml")
	if err := os.WriteFile(conf, []byte("kinds:\n  tcp_scan: {rate: 20000}\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	br := startBridge(b, h, "lab", "br1", tok, "--config", conf)
	h.waitStatus(b, "br1", "up")
	for _, lc := range l.Manifest().StoreCredentials("lab") {
		h.mustAPI(b, "POST", "/api/v1/credentials", map[string]any{"name": lc.Name, "type": lc.Type, "site": "lab",
			"username": lc.Username, "secret": lc.Secret, "fields": lc.Fields}, nil)
	}
	hubBefore := procKB(b, h.proc.pid(), "VmRSS")
	hubCPU0, brCPU0 := procCPU(b, h.proc.pid()), procCPU(b, br.proc.pid())
	b.ResetTimer()
	var wall time.Duration
	var r discoveryRun
	var id string
	for range b.N {
		t0 := time.Now()
		id = startDiscovery(b, h, "lab", cidr)
		r = waitDiscovery(b, h, id, 60*time.Minute)
		wall = time.Since(t0)
		if r.State != "completed" {
			b.Fatalf("run %s: %s %s", id, r.State, r.Reason)
		}
	}
	b.StopTimer()
	if r.Counters.Addresses != 65534 {
		b.Fatalf("the run covered %d addresses, want the whole /16 (65,534)", r.Counters.Addresses)
	}
	hubCPU, brCPU := procCPU(b, h.proc.pid())-hubCPU0, procCPU(b, br.proc.pid())-brCPU0
	// Every host of the manifest must be found with its class. Hosts outside it are other
	// labs on 127.77.0.0/16 (tests running beside the bench on a shared machine): counted,
	// not judged.
	found := map[string]string{}
	for _, x := range r.Hosts {
		found[x.IP] = x.Class
	}
	inManifest := map[string]bool{}
	var missing, wrong []string
	right := 0
	for _, x := range l.Manifest().Hosts {
		inManifest[x.IP] = true
		if x.Class == "" {
			continue
		}
		switch c, ok := found[x.IP]; {
		case !ok:
			missing = append(missing, x.IP+" ("+x.Class+")")
		case c != x.Class:
			wrong = append(wrong, x.IP+" ("+c+", manifest "+x.Class+")")
		default:
			right++
		}
	}
	others := 0
	for ip := range found {
		if !inManifest[ip] {
			others++
		}
	}
	if len(missing) > 0 || len(wrong) > 0 {
		_, raw := h.api(b, "GET", "/api/v1/discovery/runs/"+id+"?host=-", nil)
		var rec struct {
			Errors []string `json:"errors"`
			Log    []string `json:"log"`
		}
		_ = json.Unmarshal(raw, &rec)
		b.Logf("run errors: %v\nrun log: %v", rec.Errors[:min(len(rec.Errors), 20)], rec.Log)
		// the log of each host that came out wrong says which probes it got and how they ended
		for _, ip := range append(slices.Clone(missing), wrong...) {
			ip, _, _ = strings.Cut(ip, " ")
			_, raw := h.api(b, "GET", "/api/v1/discovery/runs/"+id+"?host="+ip, nil)
			var hv struct {
				Host json.RawMessage `json:"host"`
			}
			_ = json.Unmarshal(raw, &hv)
			b.Logf("host %s: %s", ip, hv.Host)
		}
		b.Fatalf("the run found %d hosts alive (%d outside the lab), the lab has %d; missing: %v; misclassified: %v; reason %q",
			r.Counters.Alive, others, alive, missing, wrong, r.Reason)
	}
	b.ReportMetric(wall.Seconds(), "s/run")
	b.ReportMetric(float64(procKB(b, h.proc.pid(), "VmHWM"))/1024, "hub-peak-RSS-MB")
	b.ReportMetric(float64(hubBefore)/1024, "hub-RSS-before-MB")
	b.ReportMetric(float64(procKB(b, br.proc.pid(), "VmHWM"))/1024, "bridge-peak-RSS-MB")
	b.ReportMetric(float64(r.Counters.Addresses), "addresses")
	b.ReportMetric(float64(alive), "manifest-hosts")
	b.ReportMetric(float64(r.Counters.Alive-others), "alive")
	b.ReportMetric(float64(others), "other-labs-alive")
	b.ReportMetric(float64(right), "classified-as-manifest")
	b.ReportMetric(hubCPU.Seconds(), "hub-CPU-s")
	b.ReportMetric(brCPU.Seconds(), "bridge-CPU-s")
	b.ReportMetric(float64(hubCPU.Microseconds())/float64(r.Counters.Addresses), "hub-CPU-µs/address")
	b.ReportMetric(float64(r.Counters.Classified), "classified")
	b.ReportMetric(float64(r.Counters.ProbesResent), "probes-resent")
	b.ReportMetric(float64(r.Counters.ProbesNotRun), "probes-not-run")
	b.ReportMetric(float64(r.Counters.CIsCreated+r.Counters.CIsUpdated+r.Counters.CIsUnchanged), "CIs")
	b.ReportMetric(0, "ns/op")
}
