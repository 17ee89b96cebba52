#!/usr/bin/env bash
# API section of docs/benchmarks.md: GET /api/v1/cis?class=server (one page of the default
# size, through the real gateway over HTTP with a bearer token) at 100,000 CIs in the CMDB
# (SQLite), p50/p99 from request to decoded answer. Writes markdown.
set -euo pipefail
cmd="go test ./services/outpost/hub -run XXX -bench BenchmarkAPIListCIs -benchtime 1000x"
out=$($cmd 2>&1 | grep -E '^Benchmark' || true)
p50=$(awk '{for (i=2;i<=NF;i++) if ($i=="p50-ms") print $(i-1)}' <<<"$out")
p99=$(awk '{for (i=2;i<=NF;i++) if ($i=="p99-ms") print $(i-1)}' <<<"$out")
t50=$(awk '{for (i=2;i<=NF;i++) if ($i=="console-ttfb-p50-ms") print $(i-1)}' <<<"$out")
t99=$(awk '{for (i=2;i<=NF;i++) if ($i=="console-ttfb-p99-ms") print $(i-1)}' <<<"$out")
echo "## API and console: GET /api/v1/cis?class=server at 100,000 CIs"
echo
echo "One page (default size, 50 CIs) of \`class=server\` — answered through the class hierarchy"
echo "(linux_server, windows_server, unix_server) — from a hub (\`hub.Run\`, in the benchmark's"
echo "process) whose SQLite CMDB holds 100,000 servers: HTTP on loopback with a bearer token,"
echo "gateway → svc.cmdb.ls over NATS → SQLite, 1,000 sequential requests after 20 warm-up ones,"
echo "request sent to answer decoded. Every fifth request the console's CI list page"
echo "(\`/console/cis?class=server\`, server-rendered from the same API call, session cookie) is"
echo "fetched too: time to its first byte — \`$cmd\`:"
echo
echo "| figure | value | target |"
echo "|---|---|---|"
echo "| API p50 | ${p50:-n/a} ms | |"
echo "| API p99 | ${p99:-n/a} ms | ≤ 50 ms |"
echo "| console CI list page: time to first byte, p50 | ${t50:-n/a} ms | |"
echo "| console CI list page: time to first byte, p99 | ${t99:-n/a} ms | |"
echo
echo '```'
echo "$out"
echo '```'
