#!/usr/bin/env bash
# A 3-node NATS JetStream cluster on loopback for tests and demos, with the hub's accounts and
# auth callout (deployments/nats/accounts.conf) and R3 streams (outpost serve picks 3 replicas
# on a cluster).
#
#   scripts/cluster.sh up DIR [--tls]   build nats-server (the version in go.mod) into DIR/bin,
#                                       make the hub's credentials (DIR/hub.creds), start n1..n3
#                                       on free loopback ports; print the URLs and the lines to use
#   scripts/cluster.sh down DIR         stop every node of DIR
#   scripts/cluster.sh kill-node DIR N  SIGKILL node N (1..3)
#   scripts/cluster.sh start-node DIR N start node N again (same ports, same store)
#   scripts/cluster.sh urls DIR         print the client URLs again
#
# DIR holds everything: bin/, conf/nN.conf, accounts.conf, data/nN/, nN.pid, nN.log,
# hub.creds + nats.env (0600 secrets, never printed), ports. With --tls, clients and routes use
# TLS with a CA made in DIR/certs (scripts/dev-certs.sh); services then need --nats-ca and
# bridges --ca DIR/certs/ca.pem. Production clusters use deployments/nats/cluster/n*.conf.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { echo "usage: scripts/cluster.sh up DIR [--tls] | down DIR | kill-node DIR N | start-node DIR N | urls DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1; dir=$2; shift 2
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)

freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
node_pid() { [ -f "$dir/n$1.pid" ] && cat "$dir/n$1.pid"; }
alive() { local p; p=$(node_pid "$1") && kill -0 "$p" 2>/dev/null; }
urls() { . "$dir/ports"; local s=nats; [ "${TLS:-0}" = 1 ] && s=tls; echo "$s://127.0.0.1:$C1,$s://127.0.0.1:$C2,$s://127.0.0.1:$C3"; }

start_node() {
  local n=$1
  alive "$n" && { echo "n$n already runs (pid $(node_pid "$n"))" >&2; return 0; }
  # shellcheck disable=SC1091
  ( set -a; . "$dir/nats.env"; set +a
    cd "$dir" && exec nohup "$dir/bin/nats-server" -c "$dir/conf/n$n.conf" >>"$dir/n$n.log" 2>&1 ) &
  echo $! >"$dir/n$n.pid"
}

wait_healthy() { # wait_healthy SECONDS N...: each node's monitoring says JetStream is healthy
  local s=$1; shift
  . "$dir/ports"
  for n in "$@"; do
    local m; m=$(eval echo "\$M$n") ok=0
    for _ in $(seq 1 $((s * 5))); do
      curl -fsS "http://127.0.0.1:$m/healthz" >/dev/null 2>&1 && { ok=1; break; }
      alive "$n" || { echo "n$n exited: $(tail -n 3 "$dir/n$n.log")" >&2; return 1; }
      sleep 0.2
    done
    [ $ok = 1 ] || { echo "n$n not healthy within ${s}s: $(tail -n 3 "$dir/n$n.log")" >&2; return 1; }
  done
}

write_conf() { # write_conf N
  local n=$1 routes="" tls="" rtls=""
  . "$dir/ports"
  for o in 1 2 3; do [ "$o" = "$n" ] || routes="$routes    nats-route://127.0.0.1:$(eval echo "\$R$o")\n"; done
  if [ "${TLS:-0}" = 1 ]; then
    tls="tls {\n  cert_file: \"certs/server.pem\"\n  key_file: \"certs/server-key.pem\"\n  ca_file: \"certs/ca.pem\"\n  timeout: 5\n}\n"
    rtls="  tls {\n    cert_file: \"certs/server.pem\"\n    key_file: \"certs/server-key.pem\"\n    ca_file: \"certs/ca.pem\"\n    verify: true\n    timeout: 5\n  }\n"
  fi
  # Loopback ports picked at `up`, so parallel tests never collide; the rest is
  # deployments/nats/cluster/n*.conf (max_file_store is a reservation ceiling: the streams'
  # MaxBytes, ~21 GiB by default, must fit in it). Paths resolve against DIR (the nodes run there).
  printf "# node n%s of the loopback cluster made by scripts/cluster.sh (see deployments/nats/cluster/n%s.conf)\nserver_name: n%s\nlisten: 127.0.0.1:%s\n%b\ncluster {\n  name: outpost-hub\n  listen: 127.0.0.1:%s\n%b  routes: [\n%b  ]\n}\n\njetstream {\n  store_dir: \"data/n%s\"\n  max_memory_store: 1GB\n  max_file_store: 100GB\n}\n\nhttp: 127.0.0.1:%s\n\ninclude \"../accounts.conf\"\n" \
    "$n" "$n" "$n" "$(eval echo "\$C$n")" "$tls" "$(eval echo "\$R$n")" "$rtls" "$routes" "$n" "$(eval echo "\$M$n")" >"$dir/conf/n$n.conf"
}

case $cmd in
up)
  tls=0
  for a in "$@"; do case $a in --tls) tls=1 ;; *) usage ;; esac; done
  mkdir -p "$dir/bin" "$dir/conf" "$dir/data"
  if [ ! -x "$dir/bin/nats-server" ]; then
    # the version of the go.mod that embeds it: the cluster runs what the tests embed
    ( cd "$root/services/outpost" && nice -n 15 go build -o "$dir/bin/nats-server" github.com/nats-io/nats-server/v2 ) \
      || { echo "could not build nats-server from the Go module" >&2; exit 1; }
  fi
  outpost="$root/bin/outpost"
  [ -x "$outpost" ] || ( cd "$root" && nice -n 15 go build -o "$outpost" ./services/outpost/cmd/outpost )
  [ -f "$dir/hub.creds" ] || "$outpost" hub-creds "$dir/hub.creds" --env "$dir/nats.env" >/dev/null
  cp "$root/deployments/nats/accounts.conf" "$dir/accounts.conf"
  if [ ! -f "$dir/ports" ]; then
    { echo "TLS=$tls"; for n in 1 2 3; do echo "C$n=$(freeport)"; echo "R$n=$(freeport)"; echo "M$n=$(freeport)"; done; } >"$dir/ports"
  fi
  . "$dir/ports"
  if [ "$TLS" = 1 ] && [ ! -f "$dir/certs/server.pem" ]; then
    OUTPOST_CERTS_DIR="$dir/certs" "$root/scripts/dev-certs.sh" >/dev/null
  fi
  for n in 1 2 3; do write_conf "$n"; start_node "$n"; done
  wait_healthy 60 1 2 3
  u=$(urls)
  ca=""; bca=""
  [ "$TLS" = 1 ] && { ca=" --nats-ca $dir/certs/ca.pem"; bca=" --ca $dir/certs/ca.pem"; }
  echo "cluster outpost-hub up: 3 nodes, pid files in $dir"
  echo "$u"
  echo "services: bin/outpost serve all --nats-url $u --nats-creds $dir/hub.creds$ca --data DATA --http 127.0.0.1:8080"
  echo "bridges:  bin/outpost-bridge --hub $u$bca --site SITE --name NAME --token TOKEN --data DATA"
  echo "admin API token: written by the first gateway to DATA/admin.token"
  ;;
down)
  for n in 1 2 3; do
    if alive "$n"; then kill -TERM "$(node_pid "$n")"; fi
  done
  for n in 1 2 3; do
    for _ in $(seq 1 50); do alive "$n" || break; sleep 0.2; done
    alive "$n" && kill -KILL "$(node_pid "$n")"
    rm -f "$dir/n$n.pid"
  done
  echo "cluster in $dir stopped"
  ;;
kill-node)
  n=${1:-}; case $n in 1|2|3) ;; *) usage ;; esac
  alive "$n" || { echo "n$n does not run" >&2; exit 1; }
  kill -KILL "$(node_pid "$n")"; rm -f "$dir/n$n.pid"
  echo "n$n killed"
  ;;
start-node)
  n=${1:-}; case $n in 1|2|3) ;; *) usage ;; esac
  start_node "$n"; wait_healthy 60 "$n"
  echo "n$n up"
  ;;
urls) urls ;;
*) usage ;;
esac
