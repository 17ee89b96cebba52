#!/usr/bin/env bash
# Replicas section of docs/benchmarks.md: discovery throughput with 1, 2 and 3 `outpost serve
# discovery` replicas on the 3-node loopback NATS cluster of scripts/cluster.sh (R3 streams), a
# separate `outpost serve gateway agents cmdb` process, one `outpost-bridge` and a lab. Each round
# starts RUNS discoveries at once (one per /25 of the lab) and waits for all; CPU comes from every
# replica's /metrics (process_cpu_seconds_total), the bridge's from /proc. Writes markdown.
#
#   scripts/bench.d/70-replicas.sh          BENCH_REPLICAS_HOSTS (120), BENCH_REPLICAS_COUNT (3 rounds per N),
#                                           BENCH_REPLICAS_N ("1 2 3": the replica counts measured),
#                                           BENCH_REPLICAS_KEEP (a dir: every process's log is copied there at the end)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
HOSTS=${BENCH_REPLICAS_HOSTS:-120}
COUNT=${BENCH_REPLICAS_COUNT:-3}
NS=${BENCH_REPLICAS_N:-1 2 3}
KEEP=${BENCH_REPLICAS_KEEP:-}
LAB=127.77.154.0/23 # four /25 runs; nothing else in the repository uses 127.77.154-155
RANGES="127.77.154.0/25 127.77.154.128/25 127.77.155.0/25 127.77.155.128/25"
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	scripts/cluster.sh down "$tmp/c" >/dev/null 2>&1 || true
	if [ -n "$KEEP" ]; then # the logs outlive the temp dir: a failed round can be read afterwards
		mkdir -p "$KEEP" && cp "$tmp"/*.log "$tmp"/*.json "$KEEP"/ 2>/dev/null || true
		find "$tmp/c" -name '*.log' -exec cp {} "$KEEP"/ \; 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
say() { echo "$*" >&2; }
die() { say "70-replicas: $*"; exit 1; }
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
waitfor() { # waitfor SECONDS CMD...
	local end=$((SECONDS + $1)); shift
	until "$@" >/dev/null 2>&1; do [ $SECONDS -lt $end ] || return 1; sleep 0.5; done
}
now() { date +%s.%N; }
jsz() { # jsz TAG: with KEEP, each node's view of the runs and leases buckets (allow_direct, leader, lag) for the record
	[ -n "$KEEP" ] || return 0
	mkdir -p "$KEEP"
	local f m
	for f in "$tmp"/c/conf/n*.conf; do
		m=$(awk '$1=="http:" {print $2}' "$f")
		curl -fsS "http://$m/jsz?accounts=true&streams=true&config=true" >"$KEEP/jsz-$1-$(basename "$f" .conf).json" 2>/dev/null || true
	done
}

nice -n 15 go build -o bin/outpost ./services/outpost/cmd/outpost
nice -n 15 go build -o bin/outpost-bridge ./services/bridge/cmd/outpost-bridge
scripts/cluster.sh up "$tmp/c" >"$tmp/cluster.txt" 2>&1 || die "cluster.sh up: $(tail -n 3 "$tmp/cluster.txt")"
URLS=$(scripts/cluster.sh urls "$tmp/c")
CREDS=$tmp/c/hub.creds
HTTP=$(freeport)
SERVER=http://127.0.0.1:$HTTP
serve() { # serve NAME SERVICES...: pid in $spid (a child of this shell, so `wait` works); data in $tmp/NAME, log $tmp/NAME.log
	local name=$1; shift
	bin/outpost serve "$@" --nats-url "$URLS" --nats-creds "$CREDS" --data "$tmp/$name" --http "127.0.0.1:$HTTP" >"$tmp/$name.log" 2>&1 &
	spid=$!
}
serve hub gateway agents cmdb
hubpid=$spid
pids+=("$hubpid")
waitfor 120 curl -fsS "$SERVER/healthz" || die "hub process not healthy: $(tail -n 3 "$tmp/hub.log")"
waitfor 30 test -s "$tmp/hub/admin.token" || die "no admin token in $tmp/hub"
TOKEN=$(cat "$tmp/hub/admin.token")
op() { bin/outpost --server "$SERVER" --token "$TOKEN" "$@"; }

bin/outpost lab --range "$LAB" --hosts "$HOSTS" --seed 7 --manifest "$tmp/lab.json" >"$tmp/lab.log" 2>&1 &
pids+=("$!")
waitfor 60 test -s "$tmp/lab.json" || die "lab wrote no manifest: $(tail -n 2 "$tmp/lab.log")"
op site add rep --range "$LAB" --auto-approve -o json >"$tmp/site.json" || die "site add failed"
BT=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["token"])' "$tmp/site.json")
bin/outpost-bridge --hub "$URLS" --site rep --name br-rep --token "$BT" --data "$tmp/br" >"$tmp/br.log" 2>&1 &
brpid=$!
pids+=("$brpid")
bridge_up() { op agents ls -o json | python3 -c 'import json,sys
a=json.load(sys.stdin); a=a.get("agents",a) if isinstance(a,dict) else a
sys.exit(0 if any(x.get("name")=="br-rep" and x.get("status")=="up" for x in a) else 1)'; }
waitfor 120 bridge_up || die "bridge not up: $(tail -n 3 "$tmp/br.log")"

# add_creds: the lab's distinct SSH/WinRM/SNMP credentials, so classification gets as far as it
# can; credentials are discovery's, so once a discovery replica answers
add_creds() {
python3 - "$tmp/lab.json" <<'PY' | while IFS=$'\x1f' read -r i typ user secret; do
import json,sys
m=json.load(open(sys.argv[1])); seen=set()
for h in (m["hosts"] if isinstance(m,dict) else m):
    c=h.get("credentials") or {}
    for typ in ("ssh","winrm"):
        s=c.get(typ)
        if s and s.get("password") and (typ,s.get("username"),s["password"]) not in seen:
            seen.add((typ,s.get("username"),s["password"])); print(len(seen),typ,s.get("username",""),s["password"],sep="\x1f")
    n=c.get("snmp")
    if n and n.get("community") and ("snmp",n["community"]) not in seen:
        seen.add(("snmp",n["community"])); print(len(seen),"snmp","",n["community"],sep="\x1f")
PY
	if [ "$typ" = snmp ]; then
		printf '%s' "$secret" | op credentials add --name "rep-$i" --type snmp --site rep --secret-stdin >/dev/null
	else
		printf '%s' "$secret" | op credentials add --name "rep-$i" --type "$typ" --site rep --username "$user" --secret-stdin >/dev/null
	fi
done
}

cpu_metrics() { # cpu_metrics DATADIR → process_cpu_seconds_total of that serve process
	curl -fsS "http://$(cat "$1/metrics.addr")/metrics" | awk '$1=="process_cpu_seconds_total" {print $2}'
}
cpu_proc() { awk -v t="$(getconf CLK_TCK)" '{printf "%.3f\n", ($14+$15)/t}' "/proc/$1/stat"; }
done_run() { op runs show "$1" -o json | python3 -c 'import json,sys;sys.exit(0 if json.load(sys.stdin)["state"] in ("completed","failed","cancelled","canceled") else 1)'; }
# one_round K PREFIX R: K replicas with data in $tmp/PREFIX-1..K; starts the runs, waits for all, prints "wall addresses classified disc-cpu hub-cpu bridge-cpu per-replica-cpu"
one_round() {
	local n=$1 pre=$2 r=$3 ids=() i
	local d0=() d1=() h0 h1 b0 b1 t0 t1
	for i in $(seq 1 "$n"); do d0+=("$(cpu_metrics "$tmp/$pre-$i")"); done
	h0=$(cpu_metrics "$tmp/hub"); b0=$(cpu_proc "$brpid")
	t0=$(now)
	for rg in $RANGES; do
		ids+=("$(op discover --site rep --range "$rg" -o json | python3 -c 'import json,sys;d=json.load(sys.stdin);print(d.get("id") or d.get("run",{}).get("id",""))')")
	done
	for id in "${ids[@]}"; do
		[ -n "$id" ] || die "a discover returned no run id"
		waitfor 1800 done_run "$id" || die "run $id not final after 30 min (N=$n round $r)"
	done
	t1=$(now)
	for i in $(seq 1 "$n"); do d1+=("$(cpu_metrics "$tmp/$pre-$i")"); done
	h1=$(cpu_metrics "$tmp/hub"); b1=$(cpu_proc "$brpid")
	local counts per="" sum=0
	# a run that cannot be shown counts as not completed ("unreadable"), not as a smaller round
	counts=$(for id in "${ids[@]}"; do op runs show "$id" -o json || printf '{"id":"%s","state":"unreadable","counters":{"addresses":0,"classified":0}}\n' "$id"; done | python3 -c '
import json,sys
dec=json.JSONDecoder(); s=sys.stdin.read().strip(); a=c=0; bad=[]
while s:
    o,k=dec.raw_decode(s); s=s[k:].strip()
    a+=o["counters"]["addresses"]; c+=o["counters"]["classified"]
    if o["state"]!="completed": bad.append(o["id"]+" "+o["state"])
print(a,c,";".join(bad) or "-")')
	for i in $(seq 0 $((n - 1))); do
		local x; x=$(awk -v a="${d0[$i]}" -v b="${d1[$i]}" 'BEGIN{printf "%.2f", b-a}')
		per="$per${per:+/}$x"; sum=$(awk -v s="$sum" -v x="$x" 'BEGIN{printf "%.2f", s+x}')
	done
	echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') $counts $sum $(awk -v a="$h0" -v b="$h1" 'BEGIN{printf "%.2f", b-a}') $(awk -v a="$b0" -v b="$b1" 'BEGIN{printf "%.2f", b-a}') $per"
}

rows=()
for n in 0 $NS; do # 0: a warm-up round with one replica (the CMDB's first CIs), not reported
	k=$((n == 0 ? 1 : n)); dp=()
	for i in $(seq 1 "$k"); do
		serve "d$n-$i" discovery
		dp+=("$spid")
	done
	pids+=("${dp[@]}")
	for i in $(seq 1 "$k"); do waitfor 120 test -s "$tmp/d$n-$i/metrics.addr" || die "replica d$n-$i wrote no metrics.addr: $(tail -n 3 "$tmp/d$n-$i.log")"; done
	waitfor 180 op runs ls -o json || die "no discovery replica answers (N=$k): $(tail -n 3 "$tmp/d$n-1.log")"
	[ "$n" = 0 ] && add_creds
	jsz "d$n"
	rounds=$([ "$n" = 0 ] && echo 1 || echo "$COUNT")
	for r in $(seq 1 "$rounds"); do
		say "== discovery replicas=$k round $r$([ "$n" = 0 ] && echo ' (warm-up)')"
		line=$(one_round "$k" "d$n" "$r")
		say "$line"
		[ "$n" = 0 ] || rows+=("$k $r $line")
	done
	for p in "${dp[@]}"; do kill -TERM "$p"; done
	for p in "${dp[@]}"; do wait "$p" 2>/dev/null || true; done
	# stopped replicas stay in pids: cleanup's kill of a reaped pid is harmless
done

echo "## Discovery replicas (1, 2, 3 \`outpost serve discovery\` on a 3-node NATS cluster)"
echo
echo "\`scripts/cluster.sh up\` (3 \`nats-server\` nodes on loopback, R3 streams, the auth callout), one \`outpost serve"
echo "gateway agents cmdb\` process (SQLite CMDB), one \`outpost-bridge\`, a lab of $HOSTS addresses on $LAB (seed 7, its"
echo "credentials added), and N \`outpost serve discovery\` processes. A round starts 4 discoveries at once (one per /25)"
echo "and waits until all are final ($COUNT rounds per N, each shown); a warm-up round with one replica went first (the CMDB's first CIs). CPU is"
echo "process user+sys over the round: each discovery replica's and the hub process's \`process_cpu_seconds_total\`"
echo "from their /metrics, the bridge's from /proc; per address = discovery replicas' CPU / addresses of the runs."
echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end — **the machine was shared and loaded**: wall"
echo "times move from run to run, CPU per address is the steadier figure. \`scripts/bench.d/70-replicas.sh\`:"
echo
echo "| discovery replicas | round | addresses (4 runs) | classified | wall | addresses/s | discovery CPU (per replica) | discovery CPU per address | hub process CPU | bridge CPU | runs not completed |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
	# shellcheck disable=SC2086
	set -- $row # n round wall addresses classified bad disc hub bridge per-replica
	echo "| $1 | $2 | $4 | $5 | $3 s | $(awk -v a="$4" -v w="$3" 'BEGIN{printf "%.1f", a/w}') | $7 s (${10}) | $(awk -v c="$7" -v a="$4" 'BEGIN{printf "%.2f", 1000*c/a}') ms | $8 s | $9 s | $6 |"
done
echo
echo "Discovery replicas share runs (the default; services/discovery/owner.go): each run is owned by the replica"
echo "holding its lease, free runs are taken up to a fair share (live runs / live replicas), and a result of a run"
echo "another replica owns is handed to the owner. The per-replica CPU column shows how the runs were spread. What it"
echo "costs: the handovers between replicas add CPU in all, and on this 2-core machine N replicas share the cores"
echo "with the bridge, the hub process and three nats-server nodes, so more replicas need not finish sooner here —"
echo "the figure that says whether work is shared is the per-replica CPU, not the wall time."
