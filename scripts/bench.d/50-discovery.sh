#!/usr/bin/env bash
# Discovery section of docs/benchmarks.md: whole discoveries of a lab /24 (60 hosts) and a
# lab /20 (1,000 hosts), start request to completed, with `outpost up` and `outpost-bridge`
# as separate processes; wall time and peak RSS of the hub and the bridge. Writes markdown.
set -euo pipefail
cmd="go test ./services/outpost/e2e -run XXX -bench BenchmarkDiscoveryLab -benchtime 1x -count ${BENCH_DISCOVERY_COUNT:-3} -timeout 60m"
out=$($cmd 2>&1 | grep -E '^Benchmark' || true)
# median of a metric over the rounds of one case
med() { echo "$out" | awk -v c="$1" -v u="$2" '$1 ~ c { for (i=2;i<=NF;i++) if ($i==u) print $(i-1) }' |
	sort -n | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
echo "## Discovery"
echo
echo "A whole discovery of a lab (scan → classify → identify → explore, every payload's CMDB receipt in),"
echo "from \`POST /api/v1/discovery/runs\` to the run's \`completed\`; \`outpost up --no-local-bridge\` and one"
echo "\`outpost-bridge\` run as separate processes, the lab (every profile, seed 7) in the benchmark's. Medians of the rounds."
echo "The bridge scans at its default tcp_scan rate, 2,000 connection attempts/s for the whole bridge (one budget shared"
echo "by the chunks it holds; until 2026-12 it was per chunk, four chunks at once): the /20's 61,410 attempts take ~31 s of its run."
echo "Peak RSS is VmHWM at the end of the last round. \`$cmd\`:"
echo
echo "| lab | addresses | hosts alive (manifest) | classified | CIs | start → completed | hub peak RSS | bridge peak RSS | targets |"
echo "|---|---|---|---|---|---|---|---|---|"
for c in 60:/24:"≤ 15 s" 1000:/20:"≤ 3 min, hub ≤ 300 MB"; do
	n=${c%%:*}; rest=${c#*:}; size=${rest%%:*}; target=${rest#*:}
	k="hosts=$n-"
	echo "| $n hosts on a $size | $(med "$k" addresses) | $(med "$k" manifest-hosts) | $(med "$k" classified) | $(med "$k" CIs) | $(med "$k" s/run) s | $(med "$k" hub-peak-RSS-MB) MB | $(med "$k" bridge-peak-RSS-MB) MB | $target |"
done
echo
echo '```'
echo "$out"
echo '```'
