#!/usr/bin/env bash
# pg.sh — a throwaway PostgreSQL server for tests, benchmarks and CI.
#
#   scripts/pg.sh start   start one (if not running) and print its DSN on stdout
#   scripts/pg.sh dsn     print the DSN of the running one
#   scripts/pg.sh stop    stop it and delete its directory
#
# Typical use (what .ci/run can do before `go test`):
#   export OUTPOST_PG_DSN="$(scripts/pg.sh start)"
#   trap 'scripts/pg.sh stop' EXIT
#
# It does what services/cmdb/internal/pgtest does for `go test` when OUTPOST_PG_DSN is unset:
# finds Debian's binaries under /usr/lib/postgresql/*/bin (installing the postgresql package
# when missing and running as root), runs initdb in $OUTPOST_PG_DIR (default
# ${TMPDIR:-/tmp}/outpost-pg) as the postgres user when run as root (initdb refuses root),
# and starts the server on 127.0.0.1 on a free port, with its socket in that directory and
# fsync off (the data is thrown away). Messages go to stderr; stdout is only the DSN.
set -euo pipefail

dir="${OUTPOST_PG_DIR:-${TMPDIR:-/tmp}/outpost-pg}"
data="$dir/data"

log() { echo "pg.sh: $*" >&2; }

find_bin() {
	local initdb
	initdb="$(ls -1d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)"
	if [[ -z "$initdb" ]] && command -v initdb >/dev/null 2>&1; then
		initdb="$(command -v initdb)"
	fi
	[[ -n "$initdb" ]] && dirname "$initdb"
}

install_pg() {
	if [[ "$(id -u)" != 0 ]]; then
		log "no PostgreSQL binaries and not root: install the postgresql package"
		exit 1
	fi
	log "installing postgresql (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q postgresql >&2 || { apt-get update -q >&2 && apt-get install -y -q postgresql >&2; }
}

# as_owner runs a command as the server's owner: postgres when we are root.
as_owner() {
	if [[ "$(id -u)" == 0 ]]; then
		# runuser/su keep no environment we rely on; arguments are passed safely via "$@".
		su postgres -s /bin/sh -c 'exec "$0" "$@"' -- "$@"
	else
		"$@"
	fi
}

free_port() {
	python3 - <<'EOF' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

dsn() {
	local port
	port="$(cat "$dir/port" 2>/dev/null)" || { log "not running (no $dir/port)"; exit 1; }
	echo "postgres://postgres@127.0.0.1:${port}/postgres?sslmode=disable"
}

running() {
	[[ -f "$dir/port" ]] || return 1
	local bin
	bin="$(find_bin)" || return 1
	as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

start() {
	if running; then
		dsn
		return
	fi
	local bin port
	bin="$(find_bin)" || { install_pg; bin="$(find_bin)"; }
	[[ -n "$bin" ]] || { log "PostgreSQL binaries not found after install"; exit 1; }
	rm -rf "$dir"
	mkdir -p "$dir"
	chmod 700 "$dir"
	if [[ "$(id -u)" == 0 ]]; then
		chown postgres: "$dir"
	fi
	as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; exit 1; }
	port="$(free_port)"
	as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
		-o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=300" \
		start >&2 || { cat "$dir/server.log" >&2; exit 1; }
	echo "$port" >"$dir/port"
	log "PostgreSQL $(basename "$(dirname "$bin")") running in $dir on 127.0.0.1:$port"
	dsn
}

stop() {
	if [[ -d "$data" ]]; then
		local bin
		bin="$(find_bin)" && as_owner "$bin/pg_ctl" -D "$data" -m immediate -w stop >&2 || true
	fi
	rm -rf "$dir"
}

case "${1:-start}" in
start) start ;;
dsn) dsn ;;
stop) stop ;;
*)
	echo "usage: $0 [start|dsn|stop]" >&2
	exit 2
	;;
esac
