// Package alertmanager benchmarks Prometheus Alertmanager, built from its Go module
// (github.com/prometheus/alertmanager v0.35.0), under the alert load of the correlation
// service's benchmarks, for the side-by-side figures of `make bench`
// (scripts/bench.d/60-correlation.sh).
//
// It is its own module, outside go.work: Alertmanager's dependencies (AWS SDK, Prometheus
// libraries…) never enter the graph of any Outpost module. Run it with GOWORK=off.
package alertmanager
