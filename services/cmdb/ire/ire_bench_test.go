package ire_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
	"github.com/outpost-dev/outpost/services/cmdb/internal/pgtest"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// benchBackends opens a fresh store per implementation; PostgreSQL only when available
// (pgtest.Main started it, or OUTPOST_PG_DSN names one).
func benchBackends(b *testing.B) map[string]func(b *testing.B) store.Store {
	out := map[string]func(b *testing.B) store.Store{
		"sqlite": func(b *testing.B) store.Store {
			return openBench(b, "sqlite://"+filepath.Join(b.TempDir(), "cmdb.db"))
		},
	}
	if !pgtest.Skipped() && os.Getenv(pgtest.EnvDSN) != "" {
		out["postgres"] = func(b *testing.B) store.Store { return openBench(b, pgtest.DSN(b)) }
	}
	return out
}

func openBench(b *testing.B, dsn string) store.Store {
	st, err := store.Open(context.Background(), dsn, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// benchPayload describes n new servers numbered from start, each with three relations to
// its neighbours in the payload: the shape of an import page or a discovery batch.
func benchPayload(start, n int, observed time.Time) envelope.CIPayload {
	p := envelope.CIPayload{Source: "discovery", Observed: observed, Items: make([]envelope.CIItem, 0, n)}
	for i := 0; i < n; i++ {
		id := start + i
		class, os := "linux_server", "Linux"
		switch id % 10 {
		case 7, 8:
			class, os = "windows_server", "Windows"
		case 9:
			class, os = "unix_server", "AIX"
		}
		p.Items = append(p.Items, envelope.CIItem{Ref: strconv.Itoa(i), Class: class, Attributes: map[string]any{
			"name":          fmt.Sprintf("host-%07d", id),
			"serial_number": fmt.Sprintf("BENCH-%07d", id),
			"ip_address":    fmt.Sprintf("10.%d.%d.%d", id>>16&255, id>>8&255, id&255),
			"os":            os,
			"os_version":    "22.04",
			"cpu_count":     2 << (id % 3),
			"ram_mb":        4096,
			"environment":   []string{"production", "staging", "test"}[id%3],
		}})
		for k, typ := range []string{"depends_on", "connected_to", "member_of"} {
			p.Relations = append(p.Relations, envelope.CIRelation{Type: typ, From: strconv.Itoa(i), To: strconv.Itoa((i + k + 1) % n)})
		}
	}
	return p
}

// BenchmarkIngest ingests payloads of 100 new servers with 3 relations each.
func BenchmarkIngest(b *testing.B) {
	m, err := classes.Default()
	if err != nil {
		b.Fatal(err)
	}
	const perPayload = 100
	for name, open := range benchBackends(b) {
		b.Run(name, func(b *testing.B) {
			eng, err := ire.New(open(b), m, ire.Options{})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			payloads := make([]envelope.CIPayload, b.N)
			for i := range payloads {
				payloads[i] = benchPayload(i*perPayload, perPayload, t0)
			}
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			for i := 0; i < b.N; i++ {
				if _, err := eng.Ingest(ctx, payloads[i]); err != nil {
					b.Fatal(err)
				}
			}
			elapsed, cpu := time.Since(start), cpuTime()-cpu0
			b.ReportMetric(float64(b.N*perPayload)/elapsed.Seconds(), "CIs/s")
			// CPU of this process (the engine and SQLite; PostgreSQL's server is another
			// process): on a shared, loaded machine it moves less than the wall clock.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*perPayload), "cpu-µs/CI")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkListPage measures a filtered list page at OUTPOST_BENCH_CIS CIs (default
// 100,000) and reports p50/p99 in milliseconds.
func BenchmarkListPage(b *testing.B) {
	m, err := classes.Default()
	if err != nil {
		b.Fatal(err)
	}
	total := 100_000
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_BENCH_CIS")); err == nil && v > 0 {
		total = v
	}
	backends := benchBackends(b)
	if path := os.Getenv("OUTPOST_BENCH_SQLITE_FILE"); path != "" {
		// Seeding 100,000 CIs takes a while: reuse a file seeded by an earlier run.
		backends["sqlite"] = func(b *testing.B) store.Store { return openBench(b, "sqlite://"+path) }
	}
	for name, open := range backends {
		b.Run(name, func(b *testing.B) {
			st := open(b)
			eng, err := ire.New(st, m, ire.Options{})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			counts, err := st.CountByClass(ctx)
			if err != nil {
				b.Fatal(err)
			}
			have := int(m.RollUp(counts)[classes.Root])
			seed := time.Now()
			for i := have; i < total; i += 500 {
				if _, err := eng.Ingest(ctx, benchPayload(i, min(500, total-i), t0)); err != nil {
					b.Fatal(err)
				}
			}
			if have < total {
				b.Logf("%s: seeded %d CIs with 3 relations each in %s (%.0f CIs/s)", name, total-have, time.Since(seed).Round(time.Millisecond),
					float64(total-have)/time.Since(seed).Seconds())
			}

			servers := m.Descendants("server")
			queries := map[string]store.ListQuery{
				"class+filter": {Classes: servers, Filters: []store.AttrFilter{{Attr: "os", Value: "windows"}}, Limit: 50},
				"class+filter+search": {Classes: servers, Filters: []store.AttrFilter{{Attr: "environment", Value: "production"}},
					Search: "host-00012", Limit: 50},
				"rare class":   {Classes: []string{"unix_server"}, Filters: []store.AttrFilter{{Attr: "cpu_count", Value: "8"}}, Limit: 50},
				"search ip":    {Search: "10.0.200.", Limit: 50},
				"deep page":    {Classes: servers, Filters: []store.AttrFilter{{Attr: "os", Value: "linux"}}, Limit: 50},
				"no match yet": {Classes: servers, Filters: []store.AttrFilter{{Attr: "os", Value: "plan9"}}, Limit: 50},
			}
			// A cursor from the middle of the table, so that a page is not always the first.
			if page, err := st.List(ctx, store.ListQuery{Limit: 1000}); err == nil && page.Next != "" {
				q := queries["deep page"]
				for i := 0; i < total/2000 && page.Next != ""; i++ {
					if page, err = st.List(ctx, store.ListQuery{Limit: 1000, Cursor: page.Next}); err != nil {
						b.Fatal(err)
					}
				}
				q.Cursor = page.Next
				queries["deep page"] = q
			}
			for qname, q := range queries {
				b.Run(qname, func(b *testing.B) {
					lat := make([]time.Duration, 0, b.N)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						t := time.Now()
						if _, err := st.List(ctx, q); err != nil {
							b.Fatal(err)
						}
						lat = append(lat, time.Since(t))
					}
					b.StopTimer()
					slices.Sort(lat)
					pct := func(p float64) float64 {
						return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds()) / 1000
					}
					b.ReportMetric(pct(0.50), "p50-ms")
					b.ReportMetric(pct(0.99), "p99-ms")
				})
			}
		})
	}
}
