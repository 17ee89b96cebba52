#!/usr/bin/env bash
# Bridges in their own NATS account: the echo round trip and interactive latency of this tree
# beside the last commit before the account split, measured alternately in the same run (the
# trust issue asks for no more than 10 % slower). Writes markdown.
set -euo pipefail
base=${BENCH_ACCOUNTS_BASE:-c9e2dd1} # the last commit with bridges in the hub's account
rounds=${BENCH_ACCOUNTS_ROUNDS:-5}
root=$(pwd)
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/base" "$base" >/dev/null 2>&1
# One measurement for both trees: this tree's bench file (more samples, CPU per probe) runs in
# the base tree too; it only uses helpers the base already had.
# (The base has no probe lanes: its probe subject takes no lane argument.)
sed 's/bus.ProbeSubject(p.Site, p.Priority, p.Capability, bus.ProbeLane(p.App))/bus.ProbeSubject(p.Site, p.Priority, p.Capability)/' \
  services/outpost/e2e/bench_test.go >"$work/base/services/outpost/e2e/bench_test.go"
# The bench file's helpers that live in other files of this tree (procCPU, since the e2e
# benches share one) go to the base in a file of their own when it lacks them; without this
# the base's bench does not build and its column is "n/a".
if ! grep -q '^func procCPU' "$work"/base/services/outpost/e2e/*_test.go; then
  {
    printf 'package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

'
    awk '/^func procCPU\(/ {on=1} on {print} on && /^}/ {exit}' services/outpost/e2e/*_test.go
  } >"$work/base/services/outpost/e2e/zz_benchproc_test.go"
fi
cmd="go test ./services/outpost/e2e -run XXX -bench EchoRoundTrip/bridges=1 -benchtime 1x -count 1"
cmd2="go test ./services/outpost/e2e -run XXX -bench InteractiveLatency -benchtime 1x -count 1"
metric() { awk -v re="$2" -v unit="$3" '$1 ~ re { for (i=2;i<=NF;i++) if ($i==unit) print $(i-1) }' "$1"; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "n/a"} else if (NR%2) {print a[(NR+1)/2]} else {printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}}'; }
: >"$work/before.txt"; : >"$work/after.txt"
for i in $(seq "$rounds"); do
  echo "== accounts A/B round $i: before ($base)" >&2
  (cd "$work/base" && { $cmd; $cmd2; } 2>/dev/null | grep -E '^Benchmark' >>"$work/before.txt") || true
  echo "== accounts A/B round $i: after (this tree)" >&2
  ({ $cmd; $cmd2; } 2>/dev/null | grep -E '^Benchmark' >>"$work/after.txt") || true
done
for t in before after; do
  [ -s "$work/$t.txt" ] || echo "15-accounts: no figures from the $t tree (does its bench build? run the go test command there)" >&2
done
rt_b=$(metric "$work/before.txt" 'bridges=1' probes/s | median); rt_a=$(metric "$work/after.txt" 'bridges=1' probes/s | median)
p50_b=$(metric "$work/before.txt" 'InteractiveLatency' p50-ms | median); p50_a=$(metric "$work/after.txt" 'InteractiveLatency' p50-ms | median)
p90_b=$(metric "$work/before.txt" 'InteractiveLatency' p90-ms | median); p90_a=$(metric "$work/after.txt" 'InteractiveLatency' p90-ms | median)
p99_b=$(metric "$work/before.txt" 'InteractiveLatency' p99-ms | median); p99_a=$(metric "$work/after.txt" 'InteractiveLatency' p99-ms | median)
cpu_b=$(metric "$work/before.txt" 'bridges=1' cpu-µs/probe | median); cpu_a=$(metric "$work/after.txt" 'bridges=1' cpu-µs/probe | median)
hub_b=$(metric "$work/before.txt" 'bridges=1' hub-cpu-µs/probe | median); hub_a=$(metric "$work/after.txt" 'bridges=1' hub-cpu-µs/probe | median)
rss_b=$(metric "$work/before.txt" 'bridges=1' hub-peak-RSS-MB | median); rss_a=$(metric "$work/after.txt" 'bridges=1' hub-peak-RSS-MB | median)
# every round's figure, lowest to highest: the spread a median hides
spread() { metric "$1" "$2" "$3" | sort -n | paste -sd' ' | sed 's/ / · /g'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "n/a" || b == "n/a") print "n/a"; else printf "%.0f%%", 100*a/b }'; }
echo "## Bridges in their own account: before and after, same run"
echo
echo "\`$cmd\` and \`$cmd2\` in a worktree of $base (bridges in the hub's account) and in this tree (bridges in"
echo "BRIDGES, reaching HUB through service imports), alternately, $rounds rounds each, the same bench file in both"
echo "trees; medians of the rounds. Interactive latency: 3,000 samples a round after 50 unmeasured ones (the p99 is"
echo "a round's 30th-worst sample)."
echo
echo "| figure | before ($base) | after | after ÷ before | target |"
echo "|---|---|---|---|---|"
echo "| echo round trips, 1 bridge | $rt_b probes/s | $rt_a probes/s | $(ratio "$rt_a" "$rt_b") | ≥ 90 % |"
echo "| interactive echo under a saturated standard pool: p50 | $p50_b ms | $p50_a ms | $(ratio "$p50_a" "$p50_b") | ≤ 110 % |"
echo "| same: p90 | $p90_b ms | $p90_a ms | $(ratio "$p90_a" "$p90_b") | ≤ 110 % |"
echo "| same: p99 | $p99_b ms | $p99_a ms | $(ratio "$p99_a" "$p99_b") | ≤ 110 % |"
echo "| CPU of hub and bridge per echo probe | $cpu_b µs | $cpu_a µs | $(ratio "$cpu_a" "$cpu_b") | |"
echo "| hub CPU per echo probe | $hub_b µs | $hub_a µs | $(ratio "$hub_a" "$hub_b") | |"
echo "| hub peak RSS, echo bench | $rss_b MB | $rss_a MB | $(ratio "$rss_a" "$rss_b") | |"
echo
echo "Every round (lowest to highest):"
echo
echo "| figure | before ($base) | after |"
echo "|---|---|---|"
echo "| echo round trips, probes/s | $(spread "$work/before.txt" 'bridges=1' probes/s) | $(spread "$work/after.txt" 'bridges=1' probes/s) |"
echo "| interactive p50, ms | $(spread "$work/before.txt" InteractiveLatency p50-ms) | $(spread "$work/after.txt" InteractiveLatency p50-ms) |"
echo "| interactive p99, ms | $(spread "$work/before.txt" InteractiveLatency p99-ms) | $(spread "$work/after.txt" InteractiveLatency p99-ms) |"
echo "| hub CPU µs per echo probe | $(spread "$work/before.txt" 'bridges=1' hub-cpu-µs/probe) | $(spread "$work/after.txt" 'bridges=1' hub-cpu-µs/probe) |"
echo
echo "Where the interactive tail is spent: mean of each part over the samples at or above the p99, ms"
echo "(median of the rounds): the PROBES publish and its ack; on to the bridge's start; the bridge's"
echo "finish to the result stored in RESULTS (outbox, forwarder, account boundary); RESULTS to the bench."
echo
echo "| tree | tail mean | publish | to the bridge | echo | bridge → RESULTS | delivery |"
echo "|---|---|---|---|---|---|---|"
for t in before after; do
  f="$work/$t.txt"
  name=$([ "$t" = before ] && echo "$base" || echo "this tree")
  row="| $name"
  for part in total pub in run out deliver; do row="$row | $(metric "$f" InteractiveLatency "tail-$part-ms" | median)"; done
  echo "$row |"
done
