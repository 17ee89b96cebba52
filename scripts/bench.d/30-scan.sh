#!/usr/bin/env bash
# Scan section of docs/benchmarks.md. The scan benchmark needs nmap, nftables and a network
# namespace and takes several minutes (nmap is bounded by 300 s per round): it runs when
# BENCH_SCAN=1 and otherwise the last figures (docs/bench/scan.md, with their date) are shown.
set -euo pipefail
if [ "${BENCH_SCAN:-0}" = 1 ]; then
  scripts/scanbench.sh >&2
fi
if [ -f docs/bench/scan.md ]; then
  cat docs/bench/scan.md
  echo
  echo "(\`BENCH_SCAN=1 make bench\` or \`scripts/scanbench.sh\` re-measures this section.)"
fi
