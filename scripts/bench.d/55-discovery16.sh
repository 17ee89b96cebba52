#!/usr/bin/env bash
# Discovery of a /16 for docs/benchmarks.md: a sparse lab spread over 127.77.0.0/16, the whole
# /16 scanned and swept, `outpost up` and `outpost-bridge` as separate processes; the run must
# complete, with the wall time and the hub's peak RSS (VmHWM). Writes markdown.
set -euo pipefail
# the processes' whole logs are kept (the tail a failure prints misses what went wrong early)
logs=${OUTPOST_E2E_LOGS:-$(mktemp -d /tmp/d16-logs.XXXXXX)}
export OUTPOST_E2E_LOGS=$logs
cmd="go test ./services/outpost/e2e -run XXX -bench BenchmarkDiscovery16 -benchtime 1x -count 1 -timeout 90m"
out=$($cmd 2>&1 | grep -E '^(Benchmark|--- FAIL|\s+\S+_test.go)' || true)
# a metric of the benchmark's line
m() { echo "$out" | awk -v u="$1" '/^Benchmark/ { for (i=2;i<=NF;i++) if ($i==u) print $(i-1) }' | head -1; }
echo "## Discovery of a /16"
echo
echo "A discovery of the whole of 127.77.0.0/16 (every address TCP-scanned on the discovery ports and"
echo "swept with SNMP) where a sparse lab lives: hosts spread with a stride of 251 addresses, so they fall"
echo "in 252 /24s and every scan chunk. Pending probes are kept per host, scan chunk and /24 of the sweep"
echo "(never one value for the run), so the hub's memory follows the hosts alive and the probes in flight,"
echo "not the range. \`outpost up --no-local-bridge\` and one \`outpost-bridge\` as separate processes."
echo "Peak RSS is VmHWM at the end of the run. \`$cmd\`:"
echo
echo "Found alive and classified count the lab's hosts (each must be found with its manifest class); hosts of"
echo "other labs on 127.77.0.0/16 (tests running beside the bench) are found too and counted apart. CPU is the"
echo "processes' user+system time over the run (/proc/<pid>/stat)."
echo
echo "| range | addresses | hosts alive (manifest) | found alive | classified as manifest | other labs' hosts | CIs | start → completed | hub CPU | hub CPU / address | bridge CPU | hub RSS before | hub peak RSS | bridge peak RSS | target |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
echo "| 127.77.0.0/16 | $(m addresses) | $(m manifest-hosts) | $(m alive) | $(m classified-as-manifest) | $(m other-labs-alive) | $(m CIs) | $(m s/run) s | $(m hub-CPU-s) s | $(m hub-CPU-µs/address) µs | $(m bridge-CPU-s) s | $(m hub-RSS-before-MB) MB | $(m hub-peak-RSS-MB) MB | $(m bridge-peak-RSS-MB) MB | completes, every lab host right; hub ≤ 500 MB |"
echo
echo "Probes the bridge took past their deadline and did not run (code \`expired\`, sent again): $(m probes-not-run); probes sent again in all: $(m probes-resent). Logs of the run: \`$logs\`."
echo
echo '```'
echo "$out"
echo '```'
