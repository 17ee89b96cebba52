// Package gateway is Outpost's HTTP front door: the JSON API under /api/v1, health, and
// (later) the web console. It reaches services through svc.* requests on the bus, never
// their stores.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/telemetry/metrics"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// Config of the gateway.
type Config struct {
	Addr    string // listen address, e.g. 127.0.0.1:8080
	Version string
	// ShutdownTimeout bounds how long in-flight requests may take after ctx ends.
	ShutdownTimeout time.Duration
	// AuthFailBurst failed authentications are allowed per client address at once, then one
	// per AuthFailRefill; more are answered 429 (see ratelimit.go). 0 means the default.
	AuthFailBurst  int
	AuthFailRefill time.Duration
	// TLSCert/TLSKey serve HTTPS (the hub passes its own certificate). Plain HTTP is only
	// allowed on loopback: tokens and session cookies must not cross a network in clear.
	TLSCert, TLSKey string
	// SessionTTL is how long a console sign-in lasts (the sessions bucket's TTL); 0 is
	// bus.SessionTTL.
	SessionTTL time.Duration
}

// DefaultConfig is what `outpost up` uses without flags.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:8080", Version: "dev", ShutdownTimeout: 3 * time.Second,
		AuthFailBurst: defaultAuthFailBurst, AuthFailRefill: defaultAuthFailRefill}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if host, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("http address %q: %w", c.Addr, err))
	} else if c.TLSCert == "" && !bus.IsLoopback(host) {
		errs = append(errs, fmt.Errorf("http address %q is not loopback: plain HTTP is only allowed on loopback, give a TLS certificate and key", c.Addr))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("TLS certificate and key go together: give both or neither"))
	}
	if c.AuthFailBurst < 0 || c.AuthFailRefill < 0 {
		errs = append(errs, fmt.Errorf("failed-auth limit %d per %s: want positive values (0 for the defaults)", c.AuthFailBurst, c.AuthFailRefill))
	}
	return errors.Join(errs...)
}

// Deps are what the gateway talks to.
type Deps struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	Tokens   *tokens.Store
	Topology bus.Topology // what "provisioned" means for /healthz
	Logger   *slog.Logger
	// Listener, when set, is used instead of listening on Config.Addr (tests).
	Listener net.Listener
	// Ready is called once the server accepts connections (may be nil).
	Ready func(addr net.Addr)
	// Pending lists in-process services not serving yet; /healthz is 503 until it is empty.
	Pending func() []string
	// Now is the clock of the failed-auth limiter and of session expiry (tests); nil is
	// time.Now.
	Now func() time.Time
	// Tracer starts a server span per request, the child of the caller's traceparent
	// header; its context goes on to the services called. nil: no spans.
	Tracer trace.TracerProvider
	// Registry is the process's Prometheus registry served on /metrics, to which the
	// gateway adds the hub's view of the bus (libs/telemetry/metrics.Hub); nil: a new one.
	Registry *prometheus.Registry
}

// Run serves until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("gateway config: %w", err)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 3 * time.Second
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "gateway")
	var tc *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("gateway TLS certificate %s / key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		tc = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	ln := deps.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return fmt.Errorf("listen on %s: %w (is another outpost already running? choose another --http)", cfg.Addr, err)
		}
	}
	scheme := "http://"
	if tc != nil {
		ln, scheme = tls.NewListener(ln, tc), "https://"
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = bus.SessionTTL
	}
	skv, err := deps.JS.KeyValue(ctx, bus.KVSessions)
	if err != nil {
		return fmt.Errorf("gateway: console sessions bucket %q: %w (the hub provisions it; is the bus provisioned?)", bus.KVSessions, err)
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	reg := deps.Registry
	if reg == nil {
		reg = metrics.NewRegistry()
	}
	observer, err := metrics.NewHub(reg, metrics.HubConfig{NC: deps.NC, JS: deps.JS, Logger: log, Now: deps.Now})
	if err != nil {
		return err
	}
	octx, stopObserver := context.WithCancel(ctx)
	defer stopObserver()
	go func() {
		if err := observer.Run(octx); err != nil {
			log.Error("metrics observer stopped: /metrics lacks the bus counters", "err", err)
		}
	}()
	api := &API{cfg: cfg, deps: deps, log: log, metrics: observer, registry: reg, fails: newFailLimiter(cfg.AuthFailBurst, cfg.AuthFailRefill, deps.Now),
		sessions: &sessions{kv: skv, ttl: cfg.SessionTTL, now: now},
		closing:  make(chan struct{})}
	srv := &http.Server{
		Handler:           api.traced(api.Handler()),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(func() { close(api.closing) })
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("gateway listening", "url", scheme+ln.Addr().String())
	if deps.Ready != nil {
		deps.Ready(ln.Addr())
	}
	select {
	case err := <-errc:
		return fmt.Errorf("gateway: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
