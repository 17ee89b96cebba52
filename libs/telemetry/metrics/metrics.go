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
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

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

// Serve serves /metrics (reg) and /healthz (200 while ready returns nil, else 503 with its
// error) on addr until ctx ends: the operations port of a process without a gateway (an
// `outpost serve discovery` replica), for Prometheus and for Kubernetes probes.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, ready func() error) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics address %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, reg, ready)
}

// ServeListener is Serve on a listener the caller made (tests: port 0).
func ServeListener(ctx context.Context, ln net.Listener, reg *prometheus.Registry, ready func() error) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler(reg))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
