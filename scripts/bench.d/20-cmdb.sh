#!/usr/bin/env bash
# CMDB section of docs/benchmarks.md: ingest of 100,000 CIs (3 relations each) through the bus
# on SQLite and PostgreSQL, and svc.cmdb.ls page latency at 100,000 CIs. Writes markdown.
set -euo pipefail
cmd1="go test ./services/cmdb -run XXX -bench BenchmarkServiceIngest -benchtime 1000x -benchmem"
cmd2="go test ./services/cmdb -run XXX -bench BenchmarkServiceList -benchtime 300x"
# The same SQLite ingest on the pure-Go SQLite of a CGO_ENABLED=0 build, side by side with
# the C library a build with cgo (the default) runs (services/cmdb/store/sqlite_cgo.go).
cmd3="go test ./services/cmdb -run XXX -bench BenchmarkServiceIngest\$/sqlite -benchtime 1000x"
load=$(cut -d' ' -f1-3 /proc/loadavg)
engine="SQLite's C library (cgo)"
[ "$(go env CGO_ENABLED)" = 1 ] || engine="the pure-Go SQLite (CGO_ENABLED=0)"
out1=$($cmd1 2>&1 | grep -E '^Benchmark' || true)
out3=$(CGO_ENABLED=0 OUTPOST_SKIP_PG=1 $cmd3 2>&1 | grep -E '^Benchmark' || true)
out2=$($cmd2 2>&1 | grep -E '^Benchmark' || true)
echo "## CMDB"
echo
echo "Ingest through the bus (payloads of 100 new servers with 3 relations each, 100,000 CIs;"
echo "target ≥ 20,000 CIs/s on SQLite, issue 13) — \`$cmd1\`, load average at start"
echo "$load. cpu-µs/CI is the user + system time of the whole benchmark"
echo "process (publisher, embedded NATS, CMDB; not a PostgreSQL server's) per CI: steadier than"
echo "CIs/s on a shared machine. BenchmarkServiceIngestRows sends one server per payload (the"
echo "importer's row shape): …/per-payload is the ingest before batching (one payload per"
echo "transaction), …/batched after (group commit; on SQLite a batch's writes run beside the"
echo "reconciliation of its next payloads, and the next batch is reconciled while the previous"
echo "one's last writes and commit run: chained transactions). B/op and allocs/op are per payload"
echo "(BenchmarkServiceIngest: 100 CIs). SQLite here is $engine."
echo
echo '```'
echo "$out1"
echo '```'
echo
echo "The same SQLite ingest on the pure-Go SQLite (modernc.org/sqlite) of a CGO_ENABLED=0 build, in"
echo "the same run — \`CGO_ENABLED=0 OUTPOST_SKIP_PG=1 $cmd3\`:"
echo
echo '```'
echo "$out3"
echo '```'
echo
echo "\`svc.cmdb.ls\` pages at 100,000 CIs, request to decoded answer (target p99 ≤ 20 ms) — \`$cmd2\`:"
echo
echo '```'
echo "$out2"
echo '```'
