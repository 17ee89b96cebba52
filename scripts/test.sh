#!/usr/bin/env bash
# The one test command (`make test`): every module of the workspace, with what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
go vet work
# -p 2: two cores; tests start real servers and must not starve each other.
go test -count=1 -p 2 -timeout 15m work "$@"
# A build without cgo runs the CMDB on the pure-Go SQLite (services/cmdb/store/sqlite_purego.go)
# instead of SQLite's C library: the CMDB's tests again on that one (PostgreSQL is
# the same in both builds and ran above).
(cd services/cmdb && CGO_ENABLED=0 OUTPOST_SKIP_PG=1 go test -count=1 -timeout 10m ./...)
# deployments/ is a module outside the workspace: the Kubernetes and Compose libraries its
# tests parse the manifests with stay out of the services' builds.
(cd deployments && GOWORK=off go test -count=1 -timeout 5m ./...)
