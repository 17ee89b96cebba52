#!/usr/bin/env bash
# Shared-scan section of docs/benchmarks.md: the same 1,000-host lab /20 discovered on a site
# with one and with three `outpost-bridge` processes, each scanning at a per-bridge tcp_scan
# rate (BENCH_SHARED_RATE, default 700 attempts/s) so that the scan is the run's dominant
# phase; wall time of the run and of its scan phase, CPU of the hub and the bridges per
# address. Writes markdown.
set -euo pipefail
rate=${BENCH_SHARED_RATE:-700}
cmd="go test ./services/outpost/e2e -run XXX -bench BenchmarkSharedScan -benchtime 1x -count 1 -timeout 30m"
load=$(cut -d' ' -f1-3 /proc/loadavg)
out=$(BENCH_SHARED_RATE=$rate $cmd 2>&1 | grep -E '^Benchmark' || true)
# a metric of one case
m() { echo "$out" | awk -v c="$1" -v u="$2" '$1 ~ c { for (i=2;i<=NF;i++) if ($i==u) print $(i-1) }' | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a/b }'; }
echo "## Discovery: a site's bridges share the scan"
echo
echo "The same 1,000-host lab /20 (4,094 addresses × 15 ports) discovered on a site with one and with three"
echo "\`outpost-bridge\` processes beside \`outpost up --no-local-bridge\`. Each bridge scans at $rate tcp_scan attempts/s —"
echo "one budget per bridge (\`kinds.tcp_scan.rate\`), shared by every scan chunk it holds, like nmap's \`--max-rate\` —"
echo "so three bridges should need about a third of one bridge's scan time. CPU is user+sys from /proc of the hub and"
echo "of the bridges at the run's end, per address of the range. Load average at the start: $load (2 shared cores:"
echo "wall times move with the load, CPU per address much less). \`BENCH_SHARED_RATE=$rate $cmd\`:"
echo
echo "| bridges | scan phase | start → completed | hub CPU / address | bridges' CPU / address | bridges used | hosts scanned twice |"
echo "|---|---|---|---|---|---|---|"
for n in 1 3; do
	k="bridges=$n-"
	echo "| $n | $(m "$k" scan-s/run) s | $(m "$k" s/run) s | $(m "$k" hub-cpu-us/addr) µs | $(m "$k" bridges-cpu-us/addr) µs | $(m "$k" bridges-used) | $(m "$k" hosts-scanned-twice) |"
done
echo
echo "Three bridges / one: scan phase $(ratio "$(m bridges=3- scan-s/run)" "$(m bridges=1- scan-s/run)"), whole run $(ratio "$(m bridges=3- s/run)" "$(m bridges=1- s/run)") (target: about 1/3 for the scan)."
echo
echo '```'
echo "$out"
echo '```'
