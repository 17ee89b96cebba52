package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/services/bridge/status"
)

// sharedScan runs a discovery of a lab on a site served by n bridges (separate processes);
// kill > 0 SIGKILLs that bridge (1-based) once the run is scanning. It returns the run, the
// wall time from the start request to completed, and, per bridge, the hosts whose scan
// chunk it ran (from the host logs, as `outpost discovery runs show` prints them).
func sharedScan(t testing.TB, cidr string, hosts, n, kill int) (discoveryRun, time.Duration, map[string]int, lab.Manifest) {
	r, wall, by, m, _ := sharedScanLog(t, cidr, hosts, n, kill)
	return r, wall, by, m
}

// sharedScanLog is sharedScan that also returns the run's log.
func sharedScanLog(t testing.TB, cidr string, hosts, n, kill int) (discoveryRun, time.Duration, map[string]int, lab.Manifest, []string) {
	r, wall, by, _, m, log := sharedScanRun(t, cidr, hosts, n, kill, nil)
	return r, wall, by, m, log
}

// sharedScanRun is sharedScanLog; measure, when set, is called as soon as the run completes,
// with the hub and bridges still running; bridgeArgs are given to every bridge. Besides the
// hosts scanned per bridge it returns how many hosts were scanned more than once.
func sharedScanRun(t testing.TB, cidr string, hosts, n, kill int, measure func(h *testHub, bridges []*testBridge), bridgeArgs ...string) (discoveryRun, time.Duration, map[string]int, int, lab.Manifest, []string) {
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
		bridges = append(bridges, startBridge(t, h, "lab", fmt.Sprintf("br%d", i), tok, bridgeArgs...))
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
	if measure != nil {
		measure(h, bridges)
	}
	if r.State != "completed" {
		t.Fatalf("run %s: %s %s", id, r.State, r.Reason)
	}
	by, twice := scanCounts(t, h, id, r)
	return r, wall, by, twice, m, runLog(t, h, id)
}

// runLog is a run's log lines.
func runLog(t testing.TB, h *testHub, id string) []string {
	t.Helper()
	var v struct {
		Log []string `json:"log"`
	}
	h.mustAPI(t, "GET", "/api/v1/discovery/runs/"+id, nil, &v)
	return v.Log
}

// scannedBy counts, per bridge, the hosts of a run whose scan chunk it ran (the bridge of
// the host log's first scan entry, as `outpost discovery runs show` prints it).
func scannedBy(t testing.TB, h *testHub, id string, r discoveryRun) map[string]int {
	t.Helper()
	by, _ := scanCounts(t, h, id, r)
	return by
}

// scanCounts is scannedBy, and how many hosts have more than one scan entry with a bridge
// in their log (their chunk was probed again). It asks for the hosts' logs 8 at a time: a
// /20 has hundreds, and each answer takes a while on a loaded machine.
func scanCounts(t testing.TB, h *testHub, id string, r discoveryRun) (map[string]int, int) {
	t.Helper()
	tok := h.token(t)
	type hostLog struct {
		Host struct {
			Log []struct {
				Step   string `json:"step"`
				Bridge string `json:"bridge"`
			} `json:"log"`
		} `json:"host"`
	}
	get := func(ip string) (hostLog, error) {
		var v hostLog
		req, _ := http.NewRequest("GET", "http://"+h.http+"/api/v1/discovery/runs/"+id+"?host="+ip, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := h.httpClient().Do(req)
		if err != nil {
			return v, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return v, fmt.Errorf("host %s of run %s: %d %s", ip, id, resp.StatusCode, b)
		}
		return v, json.Unmarshal(b, &v)
	}
	by, twice := map[string]int{}, 0
	var mu sync.Mutex
	var errs []error
	ips := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ip := range ips {
				v, err := get(ip)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				scans := 0
				for _, e := range v.Host.Log {
					if e.Step == "scan" && e.Bridge != "" {
						if scans == 0 {
							by[e.Bridge]++
						}
						scans++
					}
				}
				if scans > 1 {
					twice++
				}
				mu.Unlock()
			}
		})
	}
	for _, hb := range r.Hosts {
		ips <- hb.IP
	}
	close(ips)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("host logs: %v", errors.Join(errs...))
	}
	return by, twice
}

// TestSiteBridgesShareTheScan: three bridges of one site take the scan chunks of a /22 from
// its shared consumer, one of them SIGKILLed mid-run loses nothing (every live host is
// classified), and the host logs say which bridge scanned what.
func TestSiteBridgesShareTheScan(t *testing.T) {
	t.Parallel()
	r, _, by, m, log := sharedScanLog(t, "127.77.168.0/22", 120, 3, 2)
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
	// The /22 is cut for the three bridges (four chunks each); the lab's hosts fill only its
	// first chunks, so which bridges scanned hosts is logged, not asserted: the kill test
	// below asserts the spread on a range the hosts fill.
	if want := "in 12 chunks of up to 86 for 3 scanning bridges"; !slices.ContainsFunc(log, func(l string) bool { return strings.Contains(l, want) }) {
		t.Errorf("run log does not say %q:\n%s", want, strings.Join(log, "\n"))
	}
	t.Logf("hosts scanned per bridge: %v", by)
}

// BenchmarkSharedScan: the same 1,000-host lab /20 discovered by one and by three bridges
// of its site (each its own process), each bridge scanning at BENCH_SHARED_RATE (default
// 700) tcp_scan attempts/s — the bridge's one budget for all the chunks it holds, as a real
// bridge is configured — so that the scan (4,094 addresses × 15 ports) is the run's dominant
// phase and three bridges should take about a third of one's time. Besides the run's wall
// time it reports the scan phase's (from the run log's "scanning" and "scan done" lines,
// whole seconds), and the CPU time (user+sys from /proc) of the hub and of the bridges per
// address of the range: the machine is shared, so wall times move with its load and CPU per
// unit of work does not. Run it once per size (-benchtime=1x): each iteration starts a lab,
// a hub and its bridges.
//
//	nice -n 15 go test -run '^$' -bench BenchmarkSharedScan -benchtime=1x -timeout 30m ./services/outpost/e2e/
func BenchmarkSharedScan(b *testing.B) {
	rate := 700
	if v, err := strconv.Atoi(os.Getenv("BENCH_SHARED_RATE")); err == nil && v > 0 {
		rate = v
	}
	conf := filepath.Join(b.TempDir(), "bridge.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "kinds:\n  tcp_scan: {rate: %d}\n", rate), 0o600); err != nil {
		b.Fatal(err)
	}
	for i, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("bridges=%d", n), func(b *testing.B) {
			var st sharedScanStats
			for range b.N {
				st = sharedScanMeasured(b, []string{"127.77.16.0/20", "127.77.96.0/20"}[i], 1000, n, "--config", conf)
			}
			b.ReportMetric(st.wall.Seconds(), "s/run")
			b.ReportMetric(st.scan.Seconds(), "scan-s/run")
			b.ReportMetric(float64(st.hubCPU.Microseconds())/float64(st.addrs), "hub-cpu-us/addr")
			b.ReportMetric(float64(st.bridgeCPU.Microseconds())/float64(st.addrs), "bridges-cpu-us/addr")
			b.ReportMetric(float64(len(st.by)), "bridges-used")
			b.ReportMetric(float64(st.twice), "hosts-scanned-twice")
			b.ReportMetric(0, "ns/op")
			b.Logf("%d bridges at %d attempts/s each: run %s, scan %s, hub CPU %s, bridges' CPU %s, %d addresses, %d classified, hosts scanned per bridge %v, %d hosts scanned more than once; %s",
				n, rate, st.wall.Round(time.Second), st.scan, st.hubCPU.Round(time.Millisecond), st.bridgeCPU.Round(time.Millisecond), st.addrs, st.classified, st.by, st.twice, st.cut)
		})
	}
}

type sharedScanStats struct {
	wall, scan        time.Duration
	hubCPU, bridgeCPU time.Duration
	addrs, classified int
	by                map[string]int
	twice             int    // hosts with more than one scan entry in their log: a chunk probed again
	cut               string // the run log's "scanning …" line
}

// sharedScanMeasured is sharedScan without a kill, measuring CPU of the hub and the bridges
// at the run's end (before they stop).
func sharedScanMeasured(b *testing.B, cidr string, hosts, n int, bridgeArgs ...string) sharedScanStats {
	var st sharedScanStats
	// BENCH_SHARED_LOGDIR: the hub's and the bridges' logs go there (bridges at debug level:
	// which scan chunks each took and when, scanshare.go), to see where the scan loses time.
	logDir := os.Getenv("BENCH_SHARED_LOGDIR")
	if logDir != "" {
		bridgeArgs = append(slices.Clone(bridgeArgs), "--log-level", "debug")
	}
	measure := func(h *testHub, bridges []*testBridge) {
		st.hubCPU = procCPU(b, h.proc.cmd.Process.Pid)
		for _, br := range bridges {
			st.bridgeCPU += procCPU(b, br.proc.cmd.Process.Pid)
		}
		if logDir == "" {
			return
		}
		write := func(name string, p *proc) {
			if err := os.WriteFile(filepath.Join(logDir, fmt.Sprintf("%d-%s.log", n, name)), []byte(p.log.String()), 0o600); err != nil {
				b.Error(err)
			}
		}
		write("hub", h.proc)
		for _, br := range bridges {
			write(br.name, br.proc)
		}
	}
	r, wall, by, twice, _, log := sharedScanRun(b, cidr, hosts, n, 0, measure, bridgeArgs...)
	st.twice = twice
	st.wall, st.by, st.addrs, st.classified = wall, by, r.Counters.Addresses, r.Counters.Classified
	var from, to time.Time
	for _, l := range log {
		ts, text, _ := strings.Cut(l, " ")
		at, err := time.Parse(time.RFC3339, ts)
		switch {
		case err != nil:
		case strings.HasPrefix(text, "scanning "):
			from, st.cut = at, text
		case strings.HasPrefix(text, "scan done"):
			to = at
		}
	}
	if !from.IsZero() && !to.IsZero() {
		st.scan = to.Sub(from)
	}
	if logDir != "" {
		_ = os.WriteFile(filepath.Join(logDir, fmt.Sprintf("%d-run.log", n)), []byte(strings.Join(log, "\n")+"\n"), 0o600)
	}
	return st
}

// TestBridgeKilledMidChunk: the bridges of one site share the scan of a lab range its hosts
// fill — two bridges on a /25 (two chunks of 64 addresses, one each), three on a /24 (four
// chunks of up to 64) — and br2 offers only the tcp capability, so it is busy only with its
// scan chunks, and is SIGKILLed while it scans. The bridges' tcp_scan rate (one budget per
// bridge, shared by the chunks it holds) is low enough that a chunk takes ~20-30 s, far
// longer than the status file's 5 s period that tells the test br2 took its chunk. Its
// chunk is redelivered to another bridge: every host of the lab is found and classified,
// and each is exactly one CI in the CMDB.
func TestBridgeKilledMidChunk(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		cidr    string
		hosts   int
		bridges int
		rate    int // tcp_scan attempts/s per bridge
		cut     string
	}{
		// 64 addresses × 15 ports at 30 attempts/s: a chunk scans for ~32 s
		{"two bridges", "127.77.44.0/25", 100, 2, 30, "in 2 chunks of up to 64 for 2 scanning bridges"},
		// 64 × 15 at 45/s: ~21 s a chunk, ~64 s for a bridge left with three of the four
		{"three bridges", "127.77.52.0/24", 200, 3, 45, "in 4 chunks of up to 64 for 3 scanning bridges"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			killMidChunk(t, c.cidr, c.hosts, c.bridges, c.rate, c.cut)
		})
	}
}

func killMidChunk(t *testing.T, cidr string, hosts, bridges, rate int, cut string) {
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: hosts, Seed: 5})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	m := l.Manifest()
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "lab", cidr, true)
	conf := filepath.Join(t.TempDir(), "bridge.yaml")
	writeFile(t, conf, fmt.Sprintf("kinds:\n  tcp_scan: {rate: %d}\n", rate))
	var br2 *testBridge
	for i := 1; i <= bridges; i++ {
		args := []string{"--config", conf}
		if i == 2 {
			args = append(args, "--capability", "tcp")
		}
		if b := startBridge(t, h, "lab", fmt.Sprintf("br%d", i), tok, args...); i == 2 {
			br2 = b
		}
	}
	for i := 1; i <= bridges; i++ {
		h.waitStatus(t, fmt.Sprintf("br%d", i), "up")
	}
	for _, lc := range m.StoreCredentials("lab") {
		h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": lc.Name, "type": lc.Type, "site": "lab",
			"username": lc.Username, "secret": lc.Secret, "fields": lc.Fields}, nil)
	}
	id := startDiscovery(t, h, "lab", cidr)
	// br2 takes nothing but tcp probes, and no banner probe comes before the scan ends:
	// busy workers of br2 while the run scans are its scan chunks.
	eventually(t, 3*time.Minute, func() error {
		var r discoveryRun
		h.mustAPI(t, "GET", "/api/v1/discovery/runs/"+id, nil, &r)
		st, err := status.Read(br2.dir)
		if err != nil {
			return fmt.Errorf("run %s; br2 status: %v", r.State, err)
		}
		busy := 0
		for _, p := range st.Pools {
			busy += p.Busy
		}
		if r.State != "scanning" || busy == 0 {
			return fmt.Errorf("run %s, br2 busy %d (status of %s): br2 has not taken a scan chunk", r.State, busy, st.Updated.Format(time.RFC3339))
		}
		return nil
	})
	if err := br2.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := waitDiscovery(t, h, id, 10*time.Minute)
	if r.State != "completed" {
		t.Fatalf("run %s: %s %s", id, r.State, r.Reason)
	}
	by := scannedBy(t, h, id, r)
	log := runLog(t, h, id)
	t.Logf("hosts scanned per bridge: %v; run log:\n%s", by, strings.Join(log, "\n"))
	if !slices.ContainsFunc(log, func(l string) bool { return strings.Contains(l, cut) }) {
		t.Errorf("the run log does not say %q", cut)
	}

	got := map[string]string{}
	for _, hb := range r.Hosts {
		got[hb.IP] = hb.Class
	}
	classes := map[string]bool{}
	for _, mh := range m.Hosts {
		if mh.Class == "" {
			continue
		}
		classes[mh.Class] = true
		if got[mh.IP] == "" {
			t.Errorf("%s (%s) lost: not classified after br2 was killed mid-chunk", mh.IP, mh.Class)
		}
	}
	// each host exactly once in the CMDB: one host CI with its address. Appliances (web
	// servers, directories) are a "server" CI with the application CIs under it.
	hostClass := func(class string) string {
		if class == lab.ClassWeb || class == lab.ClassLDAP {
			return "server"
		}
		return class
	}
	// a class lists its subclasses too (server: linux_server, …): one entry per CI id
	cis := map[string]cmdbapi.CI{}
	for class := range classes {
		for _, ci := range listCIs(t, h, hostClass(class)) {
			cis[ci.ID] = ci
		}
	}
	for _, mh := range m.Hosts {
		if mh.Class == "" {
			continue
		}
		var of []string
		for _, ci := range cis {
			if ci.Class == hostClass(mh.Class) && fmt.Sprint(ci.Attributes["ip_address"]) == mh.IP {
				of = append(of, ci.Class+" "+ci.ID)
			}
		}
		if len(of) != 1 {
			t.Errorf("%s (%s): %d %s CIs with its address in the CMDB %v, want exactly 1", mh.IP, mh.Class, len(of), hostClass(mh.Class), of)
		}
	}
}

// listCIs is every CI of a class, page after page.
func listCIs(t testing.TB, h *testHub, class string) []cmdbapi.CI {
	t.Helper()
	var cis []cmdbapi.CI
	cursor := ""
	for {
		var list cmdbapi.ListResponse
		h.mustAPI(t, "GET", "/api/v1/cis?class="+class+"&limit=500&cursor="+url.QueryEscape(cursor), nil, &list)
		cis = append(cis, list.Items...)
		if cursor = list.NextCursor; cursor == "" {
			return cis
		}
	}
}
