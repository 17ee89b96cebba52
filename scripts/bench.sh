#!/usr/bin/env bash
# `make bench`: runs the benchmarks and writes docs/benchmarks.md (figures with the commands
# that made them). Sections come from scripts/bench.d/*.sh when present (scan, cmdb, …).
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/benchmarks.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
COUNT=${BENCH_COUNT:-5}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "n/a"} else if (NR%2) {print a[(NR+1)/2]} else {printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}}'; }
metric() { # metric FILE BENCH-REGEX UNIT → the values of UNIT on lines matching BENCH-REGEX
  awk -v re="$2" -v unit="$3" '$1 ~ re { for (i=2;i<=NF;i++) if ($i==unit) print $(i-1) }' "$1"
}

echo "== libs/bus publish→consume vs raw nats.go jetstream ($COUNT rounds)"
busCmd="go test ./libs/bus -run XXX -bench BenchmarkThroughput -benchtime 2x -count $COUNT"
$busCmd | tee "$tmp/bus.txt"
raw=$(metric "$tmp/bus.txt" 'Throughput/raw' msgs/s | median)
bus=$(metric "$tmp/bus.txt" 'Throughput/bus' msgs/s | median)
rawcpu=$(metric "$tmp/bus.txt" 'Throughput/raw' cpu-µs/msg | median)
buscpu=$(metric "$tmp/bus.txt" 'Throughput/bus' cpu-µs/msg | median)
ratio=$(awk -v a="$bus" -v b="$raw" 'BEGIN {printf "%.0f%%", 100*a/b}')
cpuratio=$(awk -v a="$rawcpu" -v b="$buscpu" 'BEGIN {printf "%.0f%%", 100*a/b}')

echo "== bridge: echo round trips, interactive latency under load, start and idle memory"
brCmd="go test ./services/outpost/e2e -run XXX -bench (EchoRoundTrip|InteractiveLatency|BridgeStartAndIdle) -benchtime 1x -count 3"
$brCmd | tee "$tmp/bridge.txt"
rt1=$(metric "$tmp/bridge.txt" 'bridges=1' probes/s | median)
rt2=$(metric "$tmp/bridge.txt" 'bridges=2' probes/s | median)
p50=$(metric "$tmp/bridge.txt" 'InteractiveLatency' p50-ms | median)
p99=$(metric "$tmp/bridge.txt" 'InteractiveLatency' p99-ms | median)
rss=$(metric "$tmp/bridge.txt" 'StartAndIdle' idle-RSS-MB | median)
ready=$(metric "$tmp/bridge.txt" 'StartAndIdle' ready-ms | median)

{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (scripts/bench.sh) on $(date -u +%Y-%m-%d) — $(nproc) cores, $(go version | awk '{print $3}'), load average at start $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Figures are medians of the rounds; the machine is shared, so wall-clock figures move from run to run:"
  echo "compare the ratios measured side by side in the same run."
  echo
  echo "## libs/bus: publish → consume throughput beside raw nats.go jetstream"
  echo
  echo "\`$busCmd\`"
  echo
  echo "Both sides publish the same 50,000 messages per round (same JSON body, same CloudEvents"
  echo "headers including Nats-Msg-Id) to the same embedded JetStream and consume them with ack."
  echo "Raw: \`PublishMsgAsync\` + \`Consume\` callback + \`json.Unmarshal\` + \`Ack\`. libs/bus: \`Publisher.Batch\`"
  echo "(tracked acks) + watermill Router with the full middleware chain + strict envelope decoding."
  echo
  echo "| path | messages/s | CPU µs / message (whole process) |"
  echo "|---|---|---|"
  echo "| raw nats.go jetstream | $raw | $rawcpu |"
  echo "| libs/bus | $bus | $buscpu |"
  echo "| **libs/bus ÷ raw** | **$ratio** (target ≥ 70 %) | raw/bus CPU efficiency $cpuratio |"
  echo
  echo "## Bridge (hub and bridges as separate processes)"
  echo
  echo "\`$brCmd\`"
  echo
  echo "| figure | value | target |"
  echo "|---|---|---|"
  echo "| echo round trips hub → bridge → outbox → hub, 1 bridge (\`--pool-standard 64\`) | $rt1 probes/s | ≥ 5,000/s |"
  echo "| same, 2 bridges | $rt2 probes/s | ≥ 5,000/s |"
  echo "| interactive echo while slow standard probes saturate the standard pool: p50 | $p50 ms | |"
  echo "| same: p99 | $p99 ms | ≤ 50 ms |"
  echo "| idle RSS of outpost-bridge (connected, approved, heartbeating) | $rss MB | ≤ 40 MB (a MID server's default heap: 1 GB) |"
  echo "| exec → \"bridge ready\" (approved bridge, outbox opened, consumers bound) | $ready ms | ≤ 500 ms |"
  echo
  for s in scripts/bench.d/*.sh; do
    [ -f "$s" ] || continue
    echo "== $s" >&2
    bash "$s"
    echo
  done
} > "$tmp/bench.md"
mkdir -p docs
mv "$tmp/bench.md" "$out"
echo "wrote $out"
