# Outpost — run `make help` for the targets.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/outpost-dev/outpost/libs/version.Version=$(VERSION)
MODULES := $(shell go list -m -f '{{.Dir}}' 2>/dev/null)
BINARIES := outpost

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-8s\033[0m %s\n", $$1, $$2}'

build: ## build every binary into bin/
	@mkdir -p bin
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/outpost ./services/outpost/cmd/outpost
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/outpost-bridge ./services/bridge/cmd/outpost-bridge

run: build ## build, then start the all-in-one hub with the lab demo (bin/outpost up --lab)
	bin/outpost up --lab

test: ## run every test of every module (installs what the tests need when missing)
	scripts/test.sh

lint: ## gofmt, go vet, and staticcheck when it installs
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet work
	@if go run honnef.co/go/tools/cmd/staticcheck@2025.1.1 -version >/dev/null 2>&1; then \
		go run honnef.co/go/tools/cmd/staticcheck@2025.1.1 $(addsuffix /...,$(MODULES)); \
	else echo "staticcheck unavailable: skipped"; fi

bench: build ## run the benchmarks and write docs/benchmarks.md
	scripts/bench.sh

dist: ## outpost-bridge for linux/amd64, linux/arm64, windows/amd64, .deb/.rpm and the Windows zip into dist/
	rm -rf dist
	SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || date +%s)}; \
	go run ./packaging/cmd/outpost-package --out dist --version '$(VERSION)' --mtime $$SOURCE_DATE_EPOCH

tidy: ## go mod tidy every module, then sync the workspace
	@for d in $(MODULES); do (cd $$d && GOWORK=off GOFLAGS=-mod=mod go mod tidy) || exit 1; done
	go work sync

.PHONY: help build run test lint bench dist tidy
