package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/telemetry/metrics"
	"github.com/outpost-dev/outpost/services/cmdb"
	"github.com/outpost-dev/outpost/services/correlation"
	"github.com/outpost-dev/outpost/services/discovery"
	"github.com/outpost-dev/outpost/services/importer"
	"github.com/outpost-dev/outpost/services/orchestration"
)

// The operations port of an `outpost serve` process: /metrics (Prometheus text) and
// /healthz, on a loopback address of its own unless told otherwise. The gateway serves the
// hub's view of the whole bus on its /metrics (behind a token); this port is per process, so
// Prometheus scrapes every replica: its CPU and memory (the process collector), which of its
// services run, and the lag of the durable consumers they share with the other replicas.

// DefaultMetricsAddr is a free loopback port: two serve processes on one host never collide,
// and the port chosen is logged and written to <data>/MetricsAddrFile.
const DefaultMetricsAddr = "127.0.0.1:0"

// MetricsAddrFile, in the data dir, holds the address the metrics port listens on
// (host:port), for scripts and scrapers' file discovery.
const MetricsAddrFile = "metrics.addr"

// MetricsOff disables the operations port (--metrics off).
const MetricsOff = "off"

// serviceConsumers are the durable consumers each service binds, by service name.
func serviceConsumers() map[string][]bus.ConsumerSpec {
	return map[string][]bus.ConsumerSpec{
		"cmdb":          cmdb.Consumers(cmdb.DefaultConfig().Partitions),
		"discovery":     discovery.Consumers(),
		"orchestration": orchestration.Consumers(),
		"correlation":   correlation.Consumers(),
		"importer":      importer.Consumers(),
	}
}

// serveCollector is the per-process series: services up, and their consumers' lag read from
// the bus at scrape time.
type serveCollector struct {
	js        jetstream.JetStream
	consumers map[string][]bus.ConsumerSpec // of the services this process runs
	timeout   time.Duration

	mu      sync.Mutex
	running map[string]bool

	descUp, descPending, descAckPending, descRedelivered, descWaiting, descErrors *prometheus.Desc
}

func newServeCollector(js jetstream.JetStream, names []string, all map[string][]bus.ConsumerSpec) *serveCollector {
	n := func(name string) string { return prometheus.BuildFQName(metrics.Namespace, "serve", name) }
	labels := []string{"service", "stream", "consumer"}
	c := &serveCollector{js: js, consumers: map[string][]bus.ConsumerSpec{}, timeout: 5 * time.Second, running: map[string]bool{},
		descUp: prometheus.NewDesc(n("service_up"), "1 while this process runs the service, 0 once it stopped (a failed service stops the process).", []string{"service"}, nil),
		descPending: prometheus.NewDesc(n("consumer_pending_messages"),
			"Messages of a durable consumer a service of this process binds that no replica was given yet (its lag).", labels, nil),
		descAckPending: prometheus.NewDesc(n("consumer_ack_pending_messages"),
			"Messages of the consumer given to some replica and not acknowledged yet.", labels, nil),
		descRedelivered: prometheus.NewDesc(n("consumer_redelivered_messages"),
			"Messages of the consumer delivered more than once and not acknowledged yet.", labels, nil),
		descWaiting: prometheus.NewDesc(n("consumer_waiting_pulls"),
			"Pull requests waiting on the consumer: the replicas (all processes) ready for work.", labels, nil),
		descErrors: prometheus.NewDesc(n("metrics_query_errors"),
			"Consumers whose figures this scrape could not read from the bus (their series are missing).", nil, nil),
	}
	for _, s := range names {
		c.running[s] = false
		if cs := all[s]; len(cs) > 0 {
			c.consumers[s] = cs
		}
	}
	return c
}

func (c *serveCollector) setRunning(service string, up bool) {
	c.mu.Lock()
	c.running[service] = up
	c.mu.Unlock()
}

func (c *serveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.descUp, c.descPending, c.descAckPending, c.descRedelivered, c.descWaiting, c.descErrors} {
		ch <- d
	}
}

func (c *serveCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	names := make([]string, 0, len(c.running))
	for s, up := range c.running {
		v := 0.0
		if up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.descUp, prometheus.GaugeValue, v, s)
		names = append(names, s)
	}
	c.mu.Unlock()
	sort.Strings(names)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	failed := 0
	for _, s := range names {
		for _, spec := range c.consumers[s] {
			cons, err := c.js.Consumer(ctx, spec.Stream, spec.Name)
			var info *jetstream.ConsumerInfo
			if err == nil {
				info, err = cons.Info(ctx)
			}
			if err != nil {
				failed++
				continue
			}
			l := []string{s, spec.Stream, spec.Name}
			ch <- prometheus.MustNewConstMetric(c.descPending, prometheus.GaugeValue, float64(info.NumPending), l...)
			ch <- prometheus.MustNewConstMetric(c.descAckPending, prometheus.GaugeValue, float64(info.NumAckPending), l...)
			ch <- prometheus.MustNewConstMetric(c.descRedelivered, prometheus.GaugeValue, float64(info.NumRedelivered), l...)
			ch <- prometheus.MustNewConstMetric(c.descWaiting, prometheus.GaugeValue, float64(info.NumWaiting), l...)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.descErrors, prometheus.GaugeValue, float64(failed))
}

// trackRunning wraps every service's Run so the collector knows which still run.
func (c *serveCollector) trackRunning(services []Service) []Service {
	out := make([]Service, len(services))
	for i, s := range services {
		run := s.Run
		s.Run = func(ctx context.Context, d Deps) error {
			c.setRunning(s.Name, true)
			defer c.setRunning(s.Name, false)
			return run(ctx, d)
		}
		out[i] = s
	}
	return out
}

// metricsService serves the operations port while the process runs: /metrics from reg,
// /healthz 200 once every service this process waits for is serving (503 naming the others).
func metricsService(addr, dataDir string, reg *prometheus.Registry, log *slog.Logger) Service {
	return Service{Name: "metrics", Run: func(ctx context.Context, d Deps) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--metrics %s: %w (another process on this port? --metrics 127.0.0.1:0 picks a free one)", addr, err)
		}
		bound := ln.Addr().String()
		path := filepath.Join(dataDir, MetricsAddrFile)
		if err := os.WriteFile(path, []byte(bound+"\n"), 0o644); err != nil {
			ln.Close()
			return fmt.Errorf("write %s: %w", path, err)
		}
		log.Info("metrics listening", "url", "http://"+bound+"/metrics")
		return metrics.ServeListener(ctx, ln, reg, func() error {
			if p := d.ready.pending(); len(p) > 0 {
				return fmt.Errorf("starting: %v not serving yet", p)
			}
			return nil
		})
	}}
}

// validMetricsAddr checks --metrics: host:port or off.
func validMetricsAddr(a string) error {
	if a == "" || a == MetricsOff {
		return nil
	}
	if _, _, err := net.SplitHostPort(a); err != nil {
		return errors.Join(fmt.Errorf("--metrics %q: want host:port (127.0.0.1:9464), 127.0.0.1:0 for a free port, or off", a), err)
	}
	return nil
}
