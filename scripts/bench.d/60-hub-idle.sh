#!/usr/bin/env bash
# Idle cost of a site: the hub's CPU with nothing to do, alone and with one approved bridge
# serving every application (162 pull consumers waiting), over BENCH_IDLE (default 60s) per
# round. Writes markdown.
set -euo pipefail
rounds=${BENCH_IDLE_ROUNDS:-3}
cmd="go test ./services/outpost/e2e -run XXX -bench BenchmarkHubIdle -benchtime 1x -count $rounds"
out=$($cmd 2>&1 | grep -E '^Benchmark' || true)
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "n/a"} else if (NR%2) {print a[(NR+1)/2]} else {printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}}'; }
fig() { awk -v re="$1" '$1 ~ re {for (i=2;i<=NF;i++) if ($i=="hub-cpu-ms/s") print $(i-1)}' <<<"$out" | median; }
zero=$(fig 'bridges=0'); one=$(fig 'bridges=1')
echo "## Hub CPU at idle, alone and with one bridge"
echo
echo "\`$cmd\` (user + system CPU of the \`outpost up\` process from /proc over ${BENCH_IDLE:-60s},"
echo "medians of $rounds rounds). The bridge serves every application: 6 lanes × 3 priorities × 9"
echo "capabilities = 162 pull consumers, each with one pull request waiting (expiry 30 s)."
echo
echo "| hub | CPU ms per s |"
echo "|---|---|"
echo "| alone | $zero |"
echo "| with one idle bridge | $one |"
echo
echo '```'
echo "$out"
echo '```'
