#!/usr/bin/env bash
# 100-site simulation section of docs/benchmarks.md: BENCH_SITES sites (default 100), each a
# lab /28 with its own bridge, token and permissions, a discovery on every site at once;
# the hub's (outpost up, its own process) RSS, CPU and JetStream consumers. Writes markdown.
set -euo pipefail
sites=${BENCH_SITES:-100}
cmd="go test ./services/outpost/e2e -run XXX -bench BenchmarkSites -benchtime 1x -count 1 -timeout 60m"
out=$(BENCH_SITES=$sites $cmd 2>&1 | grep -E '^Benchmark' || true)
m() { echo "$out" | awk -v u="$1" '{ for (i=2;i<=NF;i++) if ($i==u) print $(i-1) }' | head -n 1; }
echo "## $sites sites at once"
echo
echo "$sites sites, each a lab /28 (4 hosts) with its own bridge (enrolled with the site's token, so"
echo "with the site's own permissions; the bridges share the benchmark's process, the hub runs alone as"
echo "\`outpost up --no-local-bridge\`), then one discovery per site, all started together. \`BENCH_SITES=$sites $cmd\`:"
echo
echo "| sites | enrol all (first site / last site) | hub CPU enrolling | hub idle CPU | all runs start → completed | hub CPU over the runs (per alive host) | bridges+labs CPU | hub RSS idle / peak | JetStream consumers (per site) | hosts alive / classified / manifest |"
echo "|---|---|---|---|---|---|---|---|---|---|"
echo "| $(m sites) | $(m s-to-enroll) s ($(m s-first-site-up) s / $(m s-last-site-up) s) | $(m hub-CPU-s-enroll) s | $(m hub-idle-CPU-%) % | $(m s/all-runs) s | $(m hub-CPU-s) s ($(m hub-CPU-ms/alive-host) ms) | $(m bridges+labs-CPU-s) s | $(m hub-idle-RSS-MB) / $(m hub-peak-RSS-MB) MB | $(m consumers) ($(m consumers/site)) | $(m alive) / $(m classified) / $(m manifest-hosts) |"
echo
echo '```'
echo "$out"
echo '```'
