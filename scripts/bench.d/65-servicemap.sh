#!/usr/bin/env bash
# Service Mapping section of docs/benchmarks.md: time to map a 50-application lab estate (web →
# app server → database, shared databases, a dead backend), every map started at once, beside a
# discovery of the same hosts; `outpost up` and `outpost-bridge` as separate processes. Writes markdown.
set -euo pipefail
cmd="go test ./services/outpost/e2e -run XXX -bench BenchmarkServiceMapLab -benchtime 1x -count ${BENCH_SERVICEMAP_COUNT:-3} -timeout 30m"
out=$($cmd 2>&1 | grep -E '^Benchmark' || true)
# median of a metric over the rounds
med() { echo "$out" | awk -v u="$1" '{ for (i=2;i<=NF;i++) if ($i==u) print $(i-1) }' |
	sort -n | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
echo "## Service Mapping"
echo
echo "50 application services of a 400-host lab (seed 7), each mapped from its entry point through the bridge"
echo "(\`ss\`, \`ps\`, configuration files, \`getent\` over ssh_exec; up to 16 \`POST /api/v1/services/NAME/map?wait=true\`"
echo "at once, first maps on a fresh hub), then a discovery of the same hosts (the addresses the maps touched, as /32"
echo "ranges), start request to \`completed\`. Medians of the rounds; peak RSS is VmHWM at the end of the last round. \`$cmd\`:"
echo
echo "| work | hosts | probes | nodes / edges | classified | wall time | hub peak RSS | bridge peak RSS |"
echo "|---|---|---|---|---|---|---|---|"
echo "| map 50 application services | $(med hosts) | $(med probes) | $(med nodes) / $(med edges) | — | $(med s/map-50) s | $(med hub-peak-RSS-MB) MB | $(med bridge-peak-RSS-MB) MB |"
echo "| discovery of the same hosts | $(med hosts) | — | — | $(med classified) | $(med s/discovery) s | | |"
echo
echo '```'
echo "$out"
echo '```'
