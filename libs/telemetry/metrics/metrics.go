// Package metrics is what an Outpost process serves on /metrics (Prometheus text format): the
// Go runtime and process collectors of every process, and the hub's view of the bus — probes
// by kind and status, result latencies, consumer lag per durable, each bridge's outbox (from
// its heartbeats), the DLQ, scan, CMDB ingest and alert rates.
//
// It is a package of its own, apart from libs/telemetry, so the bridge binary (which reports
// its figures in heartbeats, not on a port it would have to listen on) does not link the
// Prometheus client.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every Outpost series.
const Namespace = "outpost"

// NewRegistry is a process's registry with the Go runtime and process collectors; whatever
// runs in the process adds its own (Hub for the hub's view of the bus).
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg in the Prometheus text format. A collector that fails (the bus is
// unreachable for the lag figures) is reported in the answer and the rest is still served.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, Registry: reg})
}
