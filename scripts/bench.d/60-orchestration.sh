#!/usr/bin/env bash
# Orchestration section of docs/benchmarks.md: a workflow step's latency through a real hub
# and bridge (p50/p99), steps/s with 1,000 concurrent runs and the hub's RSS at that load,
# plus the engine alone (embedded JetStream, test bridge) with its CPU per step. Writes
# markdown.
set -euo pipefail
e2e="go test ./services/outpost/e2e -run XXX -bench BenchmarkWorkflow(StepLatency|Throughput) -benchtime 1x -count 1 -timeout 900s"
engine="go test ./services/orchestration -run XXX -bench BenchmarkConcurrentRuns -benchtime 1000x -count 1 -timeout 600s"
out=$($e2e 2>&1 | grep -E '^Benchmark' || true)
eng=$($engine 2>&1 | grep -E '^Benchmark' || true)
metric() { awk -v re="$2" -v unit="$3" '$1 ~ re { for (i=2;i<=NF;i++) if ($i==unit) print $(i-1) }' <<<"$1"; }
p50=$(metric "$out" StepLatency p50-ms); p99=$(metric "$out" StepLatency p99-ms)
p99s=$(metric "$out" StepLatency p99-send-ms); p99b=$(metric "$out" StepLatency p99-back-ms)
sps=$(metric "$out" Throughput steps/s); rss=$(metric "$out" Throughput hub-peak-RSS-MB)
hcpu=$(metric "$out" Throughput hub-cpu-µs/step); bcpu=$(metric "$out" Throughput bridge-cpu-µs/step)
esps=$(metric "$eng" ConcurrentRuns steps/s); cpu=$(metric "$eng" ConcurrentRuns cpu-ms/step); wpb=$(metric "$eng" ConcurrentRuns writes/batch)
echo "## Orchestration: workflow steps through a bridge"
echo
echo "\`outpost up\` and one \`outpost-bridge\` (separate processes, loopback), workflows of \`echo\` steps"
echo "started over svc.orchestration. Latency: one run of one step at a time, 300 runs after 20"
echo "unmeasured ones, the step's attempt from its start (recorded, probe published) to its result"
echo "taken, as the run records it. Throughput: 1,000 runs of two steps started at once by 64"
echo "callers, from the first start to the last run completed (counted from the runs' history"
echo "records, so no polling loads the hub); CPU per step of hub and bridge (less sensitive than"
echo "steps/s to other load on the machine); the hub's peak RSS (VmHWM) after."
echo "The engine alone: \`BenchmarkConcurrentRuns\` (embedded JetStream, a test bridge, 1,000 runs"
echo "of two steps); its CPU per step counts the whole process (server, bridge, target included)"
echo "and does not depend on how busy the machine is — \`$e2e\`, \`$engine\`:"
echo
echo "| figure | value | target |"
echo "|---|---|---|"
echo "| step dispatch → result, p50 | ${p50:-n/a} ms | ≤ 5 ms |"
echo "| step dispatch → result, p99 | ${p99:-n/a} ms | |"
echo "| … of which the hub's two journal writes (attempt recorded, probe accepted), p99 | ${p99s:-n/a} ms | |"
echo "| … of which probe accepted → result taken (bridge, its outbox, results consumer), p99 | ${p99b:-n/a} ms | |"
echo "| steps/s, 1,000 concurrent runs (hub + bridge) | ${sps:-n/a} | ≥ 2,000 |"
echo "| hub CPU per step at that load | ${hcpu:-n/a} µs | |"
echo "| bridge CPU per step at that load | ${bcpu:-n/a} µs | |"
echo "| hub peak RSS at that load | ${rss:-n/a} MB | |"
echo "| engine alone: steps/s | ${esps:-n/a} | |"
echo "| engine alone: CPU per step (whole process) | ${cpu:-n/a} ms | |"
echo "| engine alone: journal writes per batch | ${wpb:-n/a} | |"
echo
echo '```'
echo "$out"
echo "$eng"
echo '```'
