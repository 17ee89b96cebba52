package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/services/bridge"
	"github.com/outpost-dev/outpost/services/bridge/probe/kinds"
)

// BenchmarkSites: BENCH_SITES sites (default 100), each with its own lab slice (a /28 of
// 127.77.240.0/20, 4 hosts) and one bridge enrolled with that site's token and permissions;
// then a discovery on every site at once, from the first start request to the last run's
// completed. `outpost up --no-local-bridge` runs as its own process (its RSS and CPU are the
// hub's alone); the bridges run in this process (bridge.Run, one per site: the simulation
// flag is the library call), the labs too.
//
// Reports: the hub's idle RSS and CPU once every bridge is up, its CPU over the enrollments,
// its peak RSS (VmHWM) and CPU seconds over the discoveries (and per alive host), this
// process's CPU (bridges and labs) over them, JetStream consumers in total and per site,
// wall times.
func BenchmarkSites(b *testing.B) {
	sites := 100
	if v, err := strconv.Atoi(os.Getenv("BENCH_SITES")); err == nil && v > 0 && v <= 256 {
		sites = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := startHub(b, b.TempDir())
	_, js := h.serviceConn(b)
	base, err := js.AccountInfo(ctx)
	if err != nil {
		b.Fatal(err)
	}
	type site struct {
		name, cidr string
		lab        *lab.Lab
	}
	var all []site
	for i := range sites {
		cidr := fmt.Sprintf("127.77.%d.%d/28", 240+i/16, (i%16)*16)
		l, err := lab.Start(ctx, lab.Config{Range: cidr, Hosts: 4, Seed: int64(100 + i)})
		if err != nil {
			b.Fatalf("lab %s: %v", cidr, err)
		}
		defer l.Close()
		all = append(all, site{name: fmt.Sprintf("s%03d", i), cidr: cidr, lab: l})
	}
	var wg sync.WaitGroup
	bctx, stopBridges := context.WithCancel(ctx)
	defer func() { stopBridges(); wg.Wait() }()
	t0 := time.Now()
	enrollCPU0 := procsCPU(b, []int{h.proc.pid()})
	// Sites enroll one after the other: each bridge up before the next site is added, so the
	// time one enrollment takes is measured as the consumers pile up.
	var firstEnroll, lastEnroll time.Duration
	for i, s := range all {
		e0 := time.Now()
		tok := h.addSite(b, s.name, s.cidr, true)
		for _, lc := range s.lab.Manifest().StoreCredentials(s.name) {
			h.mustAPI(b, "POST", "/api/v1/credentials", map[string]any{"name": lc.Name, "type": lc.Type, "site": s.name,
				"username": lc.Username, "secret": lc.Secret, "fields": lc.Fields}, nil)
		}
		cfg := bridge.DefaultConfig()
		cfg.Hub, cfg.Site, cfg.Name, cfg.Token = "nats://"+h.nats, s.name, "br-"+s.name, tok
		cfg.DataDir = filepath.Join(b.TempDir(), s.name)
		// small pools: a simulated site's few hosts need no more, and 100 bridges share this process
		cfg.Pools = map[string]int{envelope.PriorityInteractive: 2, envelope.PriorityExpedited: 2, envelope.PriorityStandard: 4}
		cfg.OutboxMax = 64 << 20
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := bridge.Run(bctx, cfg, bridge.Deps{Logger: slog.New(slog.DiscardHandler), Kinds: kinds.All()}); err != nil && bctx.Err() == nil {
				b.Errorf("bridge %s: %v", cfg.Name, err)
			}
		}()
		eventually(b, 5*time.Minute, func() error {
			if got := h.status(b, cfg.Name); got != "up" {
				return fmt.Errorf("agent %s is %q (site %d of %d, %s after its start)", cfg.Name, got, i+1, len(all), time.Since(e0).Round(time.Second))
			}
			return nil
		})
		lastEnroll = time.Since(e0)
		if i == 0 {
			firstEnroll = lastEnroll
		}
	}
	enrolled := time.Since(t0)
	enrollCPU := procsCPU(b, []int{h.proc.pid()}) - enrollCPU0
	// The standing cost of the sites: the hub's CPU while every bridge waits for work (their
	// pull requests and heartbeats), over a fixed span.
	const idleSpan = 15 * time.Second
	idleCPU0 := procsCPU(b, []int{h.proc.pid()})
	time.Sleep(idleSpan)
	idleCPU := procsCPU(b, []int{h.proc.pid()}) - idleCPU0
	idleRSS := procKB(b, h.proc.pid(), "VmRSS")
	info, err := js.AccountInfo(ctx)
	if err != nil {
		b.Fatal(err)
	}
	consumers := info.Consumers - base.Consumers
	b.ResetTimer()
	var wall, cpu, selfCPU time.Duration
	classified, alive, manifest := 0, 0, 0
	for _, s := range all {
		for _, mh := range s.lab.Manifest().Hosts {
			if mh.Class != "" {
				manifest++
			}
		}
	}
	for range b.N {
		cpu0 := procsCPU(b, []int{h.proc.pid()})
		self0 := procsCPU(b, []int{os.Getpid()})
		start := time.Now()
		ids := make([]string, len(all))
		var swg sync.WaitGroup
		for i, s := range all {
			swg.Add(1)
			go func() { defer swg.Done(); ids[i] = startDiscovery(b, h, s.name, s.cidr) }()
		}
		swg.Wait()
		classified, alive = 0, 0
		for _, id := range ids {
			r := waitDiscovery(b, h, id, 20*time.Minute)
			if r.State != "completed" {
				b.Fatalf("run %s: %s %s", id, r.State, r.Reason)
			}
			classified += r.Counters.Classified
			alive += r.Counters.Alive
		}
		wall = time.Since(start)
		cpu = procsCPU(b, []int{h.proc.pid()}) - cpu0
		selfCPU = procsCPU(b, []int{os.Getpid()}) - self0
	}
	b.StopTimer()
	after, err := js.AccountInfo(ctx)
	if err == nil {
		b.ReportMetric(float64(after.Consumers-base.Consumers), "consumers-after")
	}
	b.ReportMetric(float64(sites), "sites")
	b.ReportMetric(enrolled.Seconds(), "s-to-enroll")
	b.ReportMetric(firstEnroll.Seconds(), "s-first-site-up")
	b.ReportMetric(lastEnroll.Seconds(), "s-last-site-up")
	b.ReportMetric(wall.Seconds(), "s/all-runs")
	b.ReportMetric(cpu.Seconds(), "hub-CPU-s")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(max(alive, 1)), "hub-CPU-ms/alive-host")
	b.ReportMetric(selfCPU.Seconds(), "bridges+labs-CPU-s")
	b.ReportMetric(enrollCPU.Seconds(), "hub-CPU-s-enroll")
	b.ReportMetric(100*idleCPU.Seconds()/idleSpan.Seconds(), "hub-idle-CPU-%")
	b.ReportMetric(float64(idleRSS)/1024, "hub-idle-RSS-MB")
	b.ReportMetric(float64(procKB(b, h.proc.pid(), "VmHWM"))/1024, "hub-peak-RSS-MB")
	b.ReportMetric(float64(consumers), "consumers")
	b.ReportMetric(float64(consumers)/float64(sites), "consumers/site")
	b.ReportMetric(float64(alive), "alive")
	b.ReportMetric(float64(classified), "classified")
	b.ReportMetric(float64(manifest), "manifest-hosts")
}
