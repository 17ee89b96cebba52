package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/pgserver"
)

// Import benchmarks through `outpost up` (a separate process) and the CLI, as users run
// imports (scripts/bench.d/60-import.sh):
//
//	go test ./services/outpost/e2e -run XXX -bench BenchmarkImportCSV -benchtime 1x
//	  CSV → CMDB, OUTPOST_BENCH_IMPORT_ROWS rows (default 100,000) on SQLite and PostgreSQL:
//	  rows/s from the upload to the run's completion (every row inserted), and the hub's peak RSS.
//	go test ./services/outpost/e2e -run XXX -bench BenchmarkImportLargeCSV -benchtime 1x
//	  a CSV of OUTPOST_BENCH_IMPORT_BYTES (default 1 GB) staged and transformed with a map
//	  that ignores every row (the CMDB is not what is measured): the hub's peak RSS.

func envInt(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil && v > 0 {
		return v
	}
	return def
}

// startHubWith starts `outpost up` with extra flags (startHub's, plus e.g. --cmdb).
func startHubWith(t testing.TB, dir string, extra ...string) *testHub {
	t.Helper()
	h := &testHub{dir: dir, http: freeAddr(t), nats: freeAddr(t)}
	args := append([]string{"up", "--data", h.dir, "--http", h.http, "--nats", h.nats, "--no-local-bridge"}, extra...)
	h.proc = start(t, "outpost", args...)
	eventually(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + h.http + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	return h
}

// peakRSS is a process's peak resident set (VmHWM) in MB.
func peakRSS(t testing.TB, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb / 1024
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// procCPU is a process's CPU time so far (user + system, /proc/PID/stat): what a unit of
// work costs whatever else the machine runs.
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (in parentheses, which may hold spaces): utime and stime
	// are the 12th and 13th of them, in clock ticks (100 per second on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// writeBenchCSV writes rows servers (the importMap's columns) to path, each padded with a
// notes column to about rowBytes bytes, and returns the number of rows written: rows, or as
// many as fit in maxBytes when maxBytes > 0.
func writeBenchCSV(t testing.TB, path string, rows, rowBytes, maxBytes int64) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprint(w, "host,serial,ram_gb,os,notes\n")
	var written, n int64
	for n = 0; rows <= 0 || n < rows; n++ {
		line := fmt.Sprintf("bench-%07d,BSN%09d,%d,%s,", n, n, 4<<(n%4), []string{"Debian 12", "Rocky Linux 9"}[n%2])
		pad := max(0, int(rowBytes)-len(line)-1)
		if maxBytes > 0 && written+int64(len(line)+pad+1) > maxBytes {
			break
		}
		w.WriteString(line)
		w.WriteString(strings.Repeat("x", pad))
		w.WriteByte('\n')
		written += int64(len(line) + pad + 1)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return n
}

func BenchmarkImportCSV(b *testing.B) {
	rows := envInt("OUTPOST_BENCH_IMPORT_ROWS", 100_000)
	dir := b.TempDir()
	csvPath, mapPath := filepath.Join(dir, "servers.csv"), filepath.Join(dir, "map.yaml")
	writeBenchCSV(b, csvPath, rows, 0, 0)
	if err := os.WriteFile(mapPath, []byte(importMap), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, store := range []string{"sqlite", "postgres"} {
		b.Run(store, func(b *testing.B) {
			var extra []string
			if store == "postgres" {
				if os.Getenv("OUTPOST_SKIP_PG") == "1" {
					b.Skip("OUTPOST_SKIP_PG=1")
				}
				pg, err := pgserver.Start(context.Background(), pgserver.Options{})
				if err != nil {
					b.Fatalf("PostgreSQL (set OUTPOST_SKIP_PG=1 to skip): %v", err)
				}
				b.Cleanup(func() { _ = pg.Stop() })
				extra = []string{"--cmdb", pg.DSN}
			}
			var elapsed, cpu time.Duration
			var rss float64
			for range b.N {
				h := startHubWith(b, b.TempDir(), extra...) // every round starts empty: it measures inserts
				start, cpu0 := time.Now(), procCPU(b, h.proc.pid())
				run := h.importRun(b, "--file", csvPath, "--map", mapPath)
				elapsed += time.Since(start)
				cpu += procCPU(b, h.proc.pid()) - cpu0
				if run.State != api.StateCompleted || run.Counters != (api.Counters{Staged: rows, Inserted: rows}) {
					b.Fatalf("run %s %s %+v, want completed with %d inserted", run.State, run.Reason, run.Counters, rows)
				}
				rss = max(rss, peakRSS(b, h.proc.pid()))
				saveHubLog(b, h)
			}
			b.ReportMetric(float64(rows)*float64(b.N)/elapsed.Seconds(), "rows/s")
			b.ReportMetric(rss, "hub-peak-RSS-MB")
			b.ReportMetric(float64(cpu.Microseconds())/float64(rows*int64(b.N)), "hub-cpu-µs/row")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// saveHubLog writes the hub's output to OUTPOST_BENCH_HUB_LOG when set (diagnosing a
// bench: with GODEBUG=gctrace=1 in the environment, the hub's collections are in it).
func saveHubLog(t testing.TB, h *testHub) {
	if path := os.Getenv("OUTPOST_BENCH_HUB_LOG"); path != "" {
		if err := os.WriteFile(path, h.proc.log.Bytes(), 0o600); err != nil {
			t.Error(err)
		}
	}
}

// largeMap ignores every row: staging and transform are measured, not the CMDB.
const largeMap = `name: bench-large
target: {class: linux_server}
coalesce: [serial_number]
fields:
  name: 'row.host'
  serial_number: 'row.serial'
skip_if: 'true'
`

func BenchmarkImportLargeCSV(b *testing.B) {
	// 1 GB (the figure), not 1 GiB: import_uploads holds at most 1 GiB (libs/bus
	// stores table) and a 1 GiB file with its chunks' headers is refused as over it.
	size := envInt("OUTPOST_BENCH_IMPORT_BYTES", 1_000_000_000)
	dir := b.TempDir()
	csvPath, mapPath := filepath.Join(dir, "large.csv"), filepath.Join(dir, "map.yaml")
	rows := writeBenchCSV(b, csvPath, 0, 1024, size) // 1 KiB rows: 1 GB is 976,562 rows
	if err := os.WriteFile(mapPath, []byte(largeMap), 0o600); err != nil {
		b.Fatal(err)
	}
	var rss float64
	var elapsed, cpu time.Duration
	for range b.N {
		h := startHubWith(b, b.TempDir())
		base := peakRSS(b, h.proc.pid())
		start, cpu0 := time.Now(), procCPU(b, h.proc.pid())
		run := h.importRun(b, "--file", csvPath, "--map", mapPath)
		elapsed += time.Since(start)
		cpu += procCPU(b, h.proc.pid()) - cpu0
		if run.State != api.StateCompleted || run.Counters != (api.Counters{Staged: rows, Ignored: rows}) {
			b.Fatalf("run %s %s %+v, want completed with %d ignored", run.State, run.Reason, run.Counters, rows)
		}
		rss = max(rss, peakRSS(b, h.proc.pid()))
		b.Logf("%d MB CSV, %d rows: hub peak RSS %.0f MB (%.0f MB when idle)", size>>20, rows, rss, base)
		saveHubLog(b, h)
	}
	b.ReportMetric(rss, "hub-peak-RSS-MB")
	b.ReportMetric(float64(rows)*float64(b.N)/elapsed.Seconds(), "rows/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(rows*int64(b.N)), "hub-cpu-µs/row")
	b.ReportMetric(0, "ns/op")
}
