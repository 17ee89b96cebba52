package cmdb_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
	"github.com/outpost-dev/outpost/services/cmdb/internal/pgtest"
	"github.com/outpost-dev/outpost/services/cmdb/internal/storetest"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// Through the service, as producers and the gateway use it:
//
//	go test ./services/cmdb -run XXX -bench 'BenchmarkServiceIngest$' -benchtime 1000x   # 100,000 CIs
//	go test ./services/cmdb -run XXX -bench 'BenchmarkServiceIngestEncoded$' -benchtime 1000x   # the same, payloads encoded beforehand
//	go test ./services/cmdb -run XXX -bench BenchmarkServiceList -benchtime 300x     # p50/p99 at 100,000 CIs
//
// The engine alone: BenchmarkIngest and BenchmarkListPage in package ire.

// benchBackend opens a fresh database of one implementation for a benchmark run.
type benchBackend struct {
	name  string
	fresh func(b *testing.B) storetest.Backend
}

// benchBackends are the stores to measure: SQLite always, PostgreSQL unless skipped.
func benchBackends() []benchBackend {
	out := []benchBackend{{"sqlite", func(b *testing.B) storetest.Backend { return sqliteBackend(b) }}}
	if !pgtest.Skipped() && os.Getenv(pgtest.EnvDSN) != "" {
		out = append(out, benchBackend{"postgres", func(b *testing.B) storetest.Backend {
			return storetest.Backend{Name: "postgres", DSN: pgtest.DSN(b)}
		}})
	}
	return out
}

// benchPayload describes n new servers numbered from start, each with three relations to
// its neighbours in the payload (the shape of package ire's benchmark).
func benchPayload(start, n int) envelope.CIPayload {
	p := envelope.CIPayload{Source: "discovery", Observed: now, Items: make([]envelope.CIItem, 0, n)}
	for i := range n {
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

// BenchmarkServiceIngest publishes b.N payloads of 100 new servers with 3 relations each
// on their partitions and reports CIs/s from the first publish until the last CI is stored
// (its change events published). The timed part includes the producer's work of encoding
// the payloads (JSON), as in every earlier pass of docs/benchmarks.md.
func BenchmarkServiceIngest(b *testing.B) { benchServiceIngest(b, false) }

// BenchmarkServiceIngestEncoded is BenchmarkServiceIngest with the payloads encoded into
// their messages before the clock starts: the timed part publishes the encoded bytes, so
// it measures the CMDB (and the bus it needs) without the producer's JSON encoding, which
// discovery or the importer does in its own process. Both figures are reported side by side
// in docs/benchmarks.md; neither replaces the other.
//
//	go test ./services/cmdb -run XXX -bench 'BenchmarkServiceIngestEncoded$/sqlite' -benchtime 1000x
func BenchmarkServiceIngestEncoded(b *testing.B) { benchServiceIngest(b, true) }

func benchServiceIngest(b *testing.B, preEncoded bool) {
	const perPayload = 100
	for _, bb := range benchBackends() {
		b.Run(bb.name, func(b *testing.B) {
			h := newHub(b, true)
			h.start(b, testConfig(bb.fresh(b))) // every run starts empty: it measures new CIs
			pub := bus.NewPublisher(h.js, envelope.ServiceSource("discovery"), nil)
			payloads := make([]envelope.CIPayload, b.N)
			for i := range payloads {
				payloads[i] = benchPayload(i*perPayload, perPayload)
			}
			ctx := context.Background()
			var msgs []*nats.Msg
			if preEncoded {
				msgs = make([]*nats.Msg, len(payloads))
				for i := range payloads {
					m, _, err := pub.Message(ctx, cmdb.IngestSubject(payloads[i], cmdb.DefaultPartitions), envelope.Meta{}, &payloads[i])
					if err != nil {
						b.Fatal(err)
					}
					msgs[i] = m
				}
				payloads = nil
			}
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			if preEncoded {
				publishEncoded(b, h.js, msgs)
			} else {
				batch := pub.Batch()
				for i := range payloads {
					if err := batch.Add(ctx, cmdb.IngestSubject(payloads[i], cmdb.DefaultPartitions), envelope.Meta{}, &payloads[i]); err != nil {
						b.Fatal(err)
					}
				}
				if err := batch.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			h.drained(b, 10*time.Minute) // a payload leaves the work queue once ingested and announced
			elapsed, cpu := time.Since(start), cpuTime()-cpu0
			b.StopTimer()
			want := int64(b.N * perPayload)
			if c := counts(b, h.nc); c.Total != want {
				b.Fatalf("%d CIs stored, want %d", c.Total, want)
			}
			b.ReportMetric(float64(want)/elapsed.Seconds(), "CIs/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(want), "cpu-µs/CI")
		})
	}
}

// publishEncoded publishes messages already encoded, asynchronously, and fails b unless the
// stream acknowledged every one.
func publishEncoded(b *testing.B, js jetstream.JetStream, msgs []*nats.Msg) {
	b.Helper()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		for {
			f, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Second))
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				continue // a full async window is backpressure: wait for acks and go on
			}
			if err != nil {
				b.Fatalf("publish %s: %v", m.Subject, err)
			}
			futures = append(futures, f)
			break
		}
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatalf("publish %s: %v", msgs[i].Subject, err)
		case <-time.After(time.Minute):
			b.Fatalf("publish %s: no ack from the stream within a minute", msgs[i].Subject)
		}
	}
}

// BenchmarkServiceIngestRows publishes b.N payloads of one new server each, with a payload
// id, as the importer sends a row, and reports rows/s from the first publish until every
// payload's receipt is in the CHANGES stream (with its change event). Sub-benchmarks:
// batched (the default: group commit, many payloads in flight per partition) and
// per-payload (one payload per transaction and per partition at a time, as before batching).
//
//	go test ./services/cmdb -run XXX -bench BenchmarkServiceIngestRows -benchtime 100000x
func BenchmarkServiceIngestRows(b *testing.B) {
	modes := []struct {
		name string
		set  func(*cmdb.Config)
	}{
		{"batched", func(*cmdb.Config) {}},
		{"per-payload", func(c *cmdb.Config) { c.MaxBatch = 1 }},
	}
	for _, bb := range benchBackends() {
		for _, mode := range modes {
			b.Run(bb.name+"/"+mode.name, func(b *testing.B) {
				h := newHub(b, true)
				cfg := testConfig(bb.fresh(b))
				mode.set(&cfg)
				h.start(b, cfg)
				pub := bus.NewPublisher(h.js, envelope.ServiceSource("import"), nil)
				payloads := make([]envelope.CIPayload, b.N)
				for i := range payloads {
					payloads[i] = rowPayload(i)
				}
				ctx := context.Background()
				changes, err := h.js.Stream(ctx, bus.StreamChanges)
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				start, cpu0 := time.Now(), cpuTime()
				batch := pub.Batch()
				for i := range payloads {
					meta := envelope.Meta{ID: fmt.Sprintf("imp-bench-%d-%d", i, i), Run: "bench"}
					if err := batch.Add(ctx, cmdb.IngestSubject(payloads[i], cmdb.DefaultPartitions), meta, &payloads[i]); err != nil {
						b.Fatal(err)
					}
				}
				if err := batch.Wait(ctx); err != nil {
					b.Fatal(err)
				}
				want := uint64(2 * b.N) // a created event and a receipt per row
				eventually(b, 10*time.Minute, func() error {
					info, err := changes.Info(ctx)
					if err != nil {
						return err
					}
					if info.State.Msgs < want {
						return fmt.Errorf("%d of %d change events and receipts", info.State.Msgs, want)
					}
					return nil
				})
				elapsed, cpu := time.Since(start), cpuTime()-cpu0
				b.StopTimer()
				if c := counts(b, h.nc); c.Total != int64(b.N) {
					b.Fatalf("%d CIs stored, want %d", c.Total, b.N)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
				// CPU of the whole process (publisher, embedded server, CMDB) per row: steadier
				// than wall time on a shared machine.
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/row")
			})
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rowPayload is the payload the importer makes of one CSV row: one server, ref "row".
func rowPayload(id int) envelope.CIPayload {
	return envelope.CIPayload{Source: "import", Observed: now, Items: []envelope.CIItem{{Ref: "row", Class: "linux_server",
		Attributes: map[string]any{
			"name":          fmt.Sprintf("row-%07d", id),
			"serial_number": fmt.Sprintf("ROW-%07d", id),
			"ip_address":    fmt.Sprintf("10.%d.%d.%d", id>>16&255, id>>8&255, id&255),
			"os":            "Linux",
			"ram_mb":        4096,
		}}}}
}

// BenchmarkServiceList measures a filtered page of svc.cmdb.ls at OUTPOST_BENCH_CIS CIs
// (default 100,000), request to decoded answer, and reports p50/p99 in milliseconds. With
// OUTPOST_BENCH_SQLITE_FILE, a seeded SQLite file is reused across runs.
func BenchmarkServiceList(b *testing.B) {
	total := 100_000
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_BENCH_CIS")); err == nil && v > 0 {
		total = v
	}
	m, err := classes.Default()
	if err != nil {
		b.Fatal(err)
	}
	for _, bb := range benchBackends() {
		// One database for every run of the sub-benchmark: seed tops it up once.
		be := bb.fresh(b)
		if path := os.Getenv("OUTPOST_BENCH_SQLITE_FILE"); path != "" && bb.name == "sqlite" {
			be.DSN = "sqlite://" + path
		}
		b.Run(bb.name, func(b *testing.B) {
			seed(b, be, m, total)
			h := newHub(b, true)
			h.start(b, testConfig(be))
			queries := []struct {
				name string
				req  cmdb.ListRequest
			}{
				{"class+filter", cmdb.ListRequest{Class: "server", Filters: map[string]string{"os": "windows"}}},
				{"class+filter+search", cmdb.ListRequest{Class: "server", Filters: map[string]string{"environment": "production"}, Search: "host-00012"}},
				{"rare class+filter", cmdb.ListRequest{Class: "unix_server", Filters: map[string]string{"cpu_count": "8"}}},
				{"search ip", cmdb.ListRequest{Search: "10.0.200."}},
				{"class page", cmdb.ListRequest{Class: "server"}},
			}
			for _, q := range queries {
				b.Run(q.name, func(b *testing.B) {
					call[cmdb.ListResponse](b, h.nc, cmdb.OpList, q.req) // warm
					lat := make([]time.Duration, 0, b.N)
					b.ResetTimer()
					for range b.N {
						t := time.Now()
						page := call[cmdb.ListResponse](b, h.nc, cmdb.OpList, q.req)
						lat = append(lat, time.Since(t))
						if len(page.Items) == 0 {
							b.Fatalf("%s: empty page", q.name)
						}
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

// seed fills the store up to total CIs through the engine (the service is not running).
func seed(b *testing.B, be storetest.Backend, m *classes.Model, total int) {
	b.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, be.DSN, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	eng, err := ire.New(st, m, ire.Options{})
	if err != nil {
		b.Fatal(err)
	}
	exact, err := st.CountByClass(ctx)
	if err != nil {
		b.Fatal(err)
	}
	have := int(m.RollUp(exact)[classes.Root])
	start := time.Now()
	for i := have; i < total; i += 500 {
		if _, err := eng.Ingest(ctx, benchPayload(i, min(500, total-i))); err != nil {
			b.Fatal(err)
		}
	}
	if have < total {
		b.Logf("%s: seeded %d CIs in %s", be.Name, total-have, time.Since(start).Round(time.Millisecond))
	}
}
