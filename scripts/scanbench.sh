#!/usr/bin/env bash
# scanbench.sh — tcp_scan against nmap -sT -T4 -n -Pn and a minimal Go connect loop (the
# kernel's connect() rate), in the same run, on a lab /22 (1,024 addresses) × 100 ports
# (nmap's top 100), in two cases: plain loopback, and a quarter of the range filtered
# (SYNs dropped by nftables inside a network namespace this script creates; see
# ../shared/reference/scan-bench.md). Prints a markdown section and writes it to
# docs/bench/scan.md.
#
#   scripts/scanbench.sh [--no-hub | --through-hub CMD] [--out FILE] [--range CIDR]
#                        [--filtered CIDR] [--hosts N] [--nmap-timeout SECONDS] [--rounds N]
#                        [--loopback-only]
#
# By default each case also scans through a real hub and bridge: bin/outpost up (no local
# bridge) and bin/outpost-bridge in its own process, enrolled to a site "scanbench" whose range
# is the lab's, both started in the case's network namespace; the row's wall time is
# `outpost probe --kind tcp_scan ...` (the bridge's tcp_scan rate budget lifted in its config) from request to the last result, i.e.
# gateway → agents → PROBES → bridge → RESULTS → gateway. --no-hub leaves that row out.
# --through-hub CMD replaces it: CMD runs (sh -c, inside the namespace in the filtered
# case) with SCANBENCH_RANGE, SCANBENCH_PORTS and SCANBENCH_OUT set, and writes its results
# to $SCANBENCH_OUT: tcp_scan result JSON (any object with "ip" and "open" counts) or
# "ip:port" lines. Its wall time includes whatever CMD does.
#
# Needs root for the namespace (otherwise: loopback only, said in the output) and installs
# nmap, nftables and iproute2 with apt-get when missing. Everything binds and scans
# 127.0.0.0/8 only; nmap is bounded by --nmap-timeout (reported as "> N s").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
range=127.77.176.0/22
filtered=127.77.177.0/24
hosts=1000
nmap_timeout=300
rounds=3
hub=""
own_hub=1
out="$root/docs/bench/scan.md"
loopback_only=0
while [ $# -gt 0 ]; do
	case "$1" in
	--through-hub) hub="$2"; own_hub=0; shift 2 ;;
	--no-hub) own_hub=0; shift ;;
	--out) out="$2"; shift 2 ;;
	--range) range="$2"; shift 2 ;;
	--filtered) filtered="$2"; shift 2 ;;
	--hosts) hosts="$2"; shift 2 ;;
	--nmap-timeout) nmap_timeout="$2"; shift 2 ;;
	--rounds) rounds="$2"; shift 2 ;;
	--loopback-only) loopback_only=1; shift ;;
	-h | --help) sed -n '2,28p' "$0"; exit 0 ;;
	*) echo "scanbench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
case "$range" in 127.*) ;; *) echo "scanbench.sh: --range must be inside 127.0.0.0/8" >&2; exit 2 ;; esac

log() { echo "scanbench.sh: $*" >&2; }

apt_install() { # apt_install PACKAGE...: as root, when missing
	[ "$(id -u)" = 0 ] || return 1
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$@" >/dev/null 2>&1; }
}
command -v nmap >/dev/null || { log "installing nmap"; apt_install nmap || log "nmap unavailable: its rows will say so"; }
if [ "$loopback_only" = 0 ]; then
	command -v nft >/dev/null || { log "installing nftables"; apt_install nftables || true; }
	command -v ip >/dev/null || { log "installing iproute2"; apt_install iproute2 || true; }
fi

tmp=$(mktemp -d)
ns=""
hub_pids=()
stop_hub() {
	for p in "${hub_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${hub_pids[@]}"; do wait "$p" 2>/dev/null || true; done
	hub_pids=()
}
cleanup() {
	stop_hub
	[ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

log "building the benchmark"
(cd "$root" && go build -o "$tmp/scanbench" ./services/bridge/probe/tcpscan/cmd/scanbench)
if [ "$own_hub" = 1 ]; then
	(cd "$root" && go build -trimpath -o "$tmp/outpost" ./services/outpost/cmd/outpost &&
		go build -trimpath -o "$tmp/outpost-bridge" ./services/bridge/cmd/outpost-bridge)
fi
args=(-range "$range" -hosts "$hosts" -ports top100 -nmap-timeout "${nmap_timeout}s" -rounds "$rounds")
[ -n "$hub" ] && args+=(-through-hub "$hub")

# start_hub NAME [netns exec prefix...]: a hub and a bridge of site "scanbench" in their own
# processes; sets hub_args to the -through-hub argument that scans through them.
start_hub() {
	local name=$1; shift
	local d="$tmp/$name" http nats
	mkdir -p "$d"
	local op pid attempt up=0
	# random ports, tried again when one is taken (the machine runs other things)
	for attempt in 1 2 3 4 5; do
		http=$(( 20000 + RANDOM % 20000 )); nats=$(( http + 1 ))
		"$@" "$tmp/outpost" up --data "$d/hub" --http "127.0.0.1:$http" --nats "127.0.0.1:$nats" --no-local-bridge >"$d/hub.log" 2>&1 &
		pid=$!
		op=("$@" "$tmp/outpost" --server "http://127.0.0.1:$http" --data "$d/hub")
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			"${op[@]}" status >/dev/null 2>&1 && { up=1; break; }
			sleep 0.2
		done
		[ "$up" = 1 ] && break
		kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
		log "hub start attempt $attempt failed: $(tail -1 "$d/hub.log")"
	done
	[ "$up" = 1 ] || { tail -5 "$d/hub.log" >&2; log "the hub did not start"; return 1; }
	hub_pids+=("$pid")
	local tok
	tok=$("${op[@]}" site add scanbench --range "$range" --auto-approve -o json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
	[ -n "$tok" ] || { log "site add gave no token"; return 1; }
	# the bridge's tcp_scan budget (one rate for all its scans) lifted, as the runner's rows
	printf 'kinds:\n  tcp_scan: {rate: 0}\n' >"$d/bridge.yaml"
	"$@" "$tmp/outpost-bridge" --hub "nats://127.0.0.1:$nats" --site scanbench --name scanbench-br --token "$tok" --data "$d/bridge" --config "$d/bridge.yaml" >"$d/bridge.log" 2>&1 &
	hub_pids+=($!)
	for _ in $(seq 1 100); do "${op[@]}" agents ls -o json 2>/dev/null | grep -q '"status": *"up"' && break; sleep 0.2; done
	"${op[@]}" agents ls -o json 2>/dev/null | grep -q '"status": *"up"' || { tail -5 "$d/bridge.log" >&2; log "the bridge is not up"; return 1; }
	# the command runs inside the namespace already (scanbench is started there)
	hub_args=(-through-hub "$tmp/outpost --server http://127.0.0.1:$http --data $d/hub probe --site scanbench --kind tcp_scan --priority standard --timeout 20m --target \$SCANBENCH_RANGE --param ports=\$SCANBENCH_PORTS -o json >\$SCANBENCH_OUT")
}
hub_args=()

log "case 1: plain loopback"
if [ "$own_hub" = 1 ]; then start_hub plain || exit 1; fi
"$tmp/scanbench" "${args[@]}" "${hub_args[@]}" -case "plain loopback" -header=true >"$tmp/plain.md" 2>"$tmp/plain.log" || { cat "$tmp/plain.log" >&2; exit 1; }
stop_hub
hub_args=()

filtered_note=""
if [ "$loopback_only" = 1 ]; then
	filtered_note="The filtered case was not run (--loopback-only)."
elif [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v nft >/dev/null; then
	filtered_note="The filtered case was not run: it needs root, \`ip netns\` and \`nft\` (iproute2, nftables), which are unavailable here; loopback only."
else
	ns="outpost-scanbench-$$"
	if ip netns add "$ns" && ip netns exec "$ns" ip link set lo up &&
		ip netns exec "$ns" nft add table inet scanbench &&
		ip netns exec "$ns" nft add chain inet scanbench in '{ type filter hook input priority 0; }' &&
		ip netns exec "$ns" nft add rule inet scanbench in ip daddr "$filtered" tcp flags syn drop; then
		log "case 2: $filtered filtered (SYNs dropped in network namespace $ns); nmap may take up to ${nmap_timeout}s"
		if [ "$own_hub" = 1 ]; then start_hub filtered ip netns exec "$ns" || exit 1; fi
		ip netns exec "$ns" "$tmp/scanbench" "${args[@]}" "${hub_args[@]}" -filtered "$filtered" -case "a quarter filtered ($filtered drops SYNs)" -header=false \
			>"$tmp/filtered.md" 2>"$tmp/filtered.log" || { cat "$tmp/filtered.log" >&2; exit 1; }
	else
		filtered_note="The filtered case was not run: creating the network namespace or its nftables rule failed; loopback only."
	fi
fi

{
	echo "## TCP scan: tcp_scan beside nmap and a minimal connect loop"
	echo
	echo "Written by \`scripts/scanbench.sh\` on $(date -u +%Y-%m-%d) — $(nproc) cores, $(uname -r), $(go version | awk '{print $3}'), $(nmap --version 2>/dev/null | head -1 || echo 'nmap unavailable'), load average at start $(cut -d' ' -f1-3 /proc/loadavg)."
	echo "A lab of $hosts hosts on $range, the whole /22 (1,024 addresses) × nmap's top 100 ports = 102,400 probes."
	echo "The lab runs in a process of its own (like the targets of a real scan); the scanners run one after the other, $rounds rounds interleaved,"
	echo "in the same network namespace. Wall time is the median of the rounds (each round in brackets); nmap stops after a round it did not finish."
	echo
	echo "* **tcp_scan (runner)**: the kind's runner called directly, defaults except the bridge budget \`rate: 0\` (the polite 2,000 attempts/s per bridge lifted): 1,024 in flight, 32 per address, nmap -T4 timing;"
	echo "  with its default raw engine (non-blocking sockets + epoll, one loop per CPU) and with \`engine: dial\` (every attempt through Settings.Dial)."
	echo "* **minimal Go connect loop**: 1,024 goroutines, \`net.DialTimeout\` with 500 ms, one try — the kernel's connect() rate, the honest limit on loopback."
	echo "* **nmap -sT -T4 -n -Pn** over the same ports, bounded by ${nmap_timeout} s."
	if [ "$own_hub" = 1 ]; then
		echo "* **tcp_scan through hub and bridge**: \`outpost probe --site scanbench --kind tcp_scan --target $range --param ports=<top 100>\`, the bridge's \`kinds: {tcp_scan: {rate: 0}}\`"
		echo "  against \`outpost up --no-local-bridge\` and an \`outpost-bridge\` in its own process: gateway → agents → PROBES → bridge → RESULTS → gateway, timed from the request to the last result."
	elif [ -n "$hub" ]; then echo "* **through hub and bridge**: \`$hub\`."; fi
	echo
	echo "\"Identical to the manifest\": the open (address, port) pairs found equal the lab manifest's, minus the filtered range."
	echo "Ratios are wall-time ratios (> 1× means faster than the other)."
	echo
	cat "$tmp/plain.md"
	[ -f "$tmp/filtered.md" ] && cat "$tmp/filtered.md"
	echo
	[ -n "$filtered_note" ] && { echo "$filtered_note"; echo; }
	echo "Targets (issue 4): plain loopback ≥ 0.8× the connect loop and ≥ 1× nmap; filtered ≥ 3× nmap; identical open-port sets."
	echo "The machine is shared: wall times move from run to run, the ratios measured side by side are what to compare."
} >"$tmp/section.md"
mkdir -p "$(dirname "$out")"
cp "$tmp/section.md" "$out"
cat "$tmp/section.md"
log "wrote $out"
