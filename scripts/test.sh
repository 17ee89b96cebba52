#!/usr/bin/env bash
# The one test command (`make test`): every module of the workspace, with what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
go vet work
# -p 2: two cores; tests start real servers and must not starve each other.
go test -count=1 -p 2 -timeout 15m work "$@"
# deployments/ is a module outside the workspace: the Kubernetes and Compose libraries its
# tests parse the manifests with stay out of the services' builds.
(cd deployments && GOWORK=off go test -count=1 -timeout 5m ./...)
