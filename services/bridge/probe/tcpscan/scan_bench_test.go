package tcpscan_test

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/tcpscan"
)

// Nothing listens on 127.77.175.0/24 (the last of the probe tests' ranges, left free): every port answers a
// reset, so these benchmarks measure the scanner against the kernel's connect() rate.
const benchRange = "127.77.175.0/24"

func loopbackOnly(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	return ok && netip.MustParsePrefix("127.0.0.0/8").Contains(a.Unmap())
}

func BenchmarkScanClosed(b *testing.B) {
	f := tcpscan.NewFactory()
	cfg := f.DefaultConfig().(tcpscan.Config)
	cfg.Rate = 0 // the bridge's budget lifted: the scanner against the kernel
	r, err := f.Create(context.Background(), probe.Settings{Allowed: loopbackOnly}, cfg)
	if err != nil {
		b.Fatal(err)
	}
	params, _ := json.Marshal(map[string]any{"targets": benchRange, "ports": "1-100"})
	for b.Loop() {
		res, err := r.Run(context.Background(), probe.Request{Params: params}, func(context.Context, any) error { return nil })
		if err != nil {
			b.Fatal(err)
		}
		s := res.(*tcpscan.Summary)
		b.ReportMetric(s.ProbesPerS, "probes/s")
	}
}

func BenchmarkConnectLoopClosed(b *testing.B) {
	p := netip.MustParsePrefix(benchRange)
	var targets []string
	for a := p.Addr(); p.Contains(a); a = a.Next() {
		for port := 1; port <= 100; port++ {
			targets = append(targets, netip.AddrPortFrom(a, uint16(port)).String())
		}
	}
	for b.Loop() {
		var next atomic.Int64
		var wg sync.WaitGroup
		t0 := time.Now()
		for range 1024 {
			wg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= int64(len(targets)) {
						return
					}
					if c, err := net.DialTimeout("tcp", targets[i], 500*time.Millisecond); err == nil {
						c.Close()
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(len(targets))/time.Since(t0).Seconds(), "probes/s")
	}
}
