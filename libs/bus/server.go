// Package bus is the message plumbing every Outpost process shares: the embedded JetStream
// server, connections, the declarative topology of streams/KV/consumers, publishing with
// CloudEvents headers and trace context, consuming through a watermill Router with bounded
// in-flight work and dead-lettering, and request/reply service endpoints.
package bus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ServerConfig configures the embedded NATS JetStream server of `outpost up`, of tests and
// of a bridge's local outbox.
type ServerConfig struct {
	Name     string // server_name; must be unique in a cluster
	StoreDir string // JetStream file store
	// Listen is the client address bridges dial ("127.0.0.1:4222"). Empty: no listener at all
	// (in-process connections only), which is what a bridge's outbox uses.
	Listen string
	// WebSocket, when set, also accepts clients on this address (sites that allow only HTTPS
	// egress), always over TLS: WebSocketTLS is required with it.
	WebSocket    string
	WebSocketTLS *tls.Config
	// TLS of the client port: required for a non-loopback Listen, optional on loopback.
	TLS *tls.Config
	// SyncInterval bounds how much acknowledged data a power loss can take with it; the
	// server's default is 2 minutes.
	SyncInterval time.Duration
	Domain       string // JetStream domain
	MaxStore     int64  // bytes, 0 = server default
	// Configure, when set, adjusts the server options last (accounts, auth callout, ...).
	Configure func(*server.Options) error
	Logger    *slog.Logger
}

// Validate reports every problem of the configuration at once.
func (c ServerConfig) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("server name is empty"))
	}
	if c.StoreDir == "" {
		errs = append(errs, errors.New("store dir is empty: JetStream needs a directory for its file store"))
	}
	for _, a := range []struct {
		what, addr string
		tls        *tls.Config
	}{{"client listen", c.Listen, c.TLS}, {"websocket", c.WebSocket, c.WebSocketTLS}} {
		if a.addr == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s address %q: %w", a.what, a.addr, err))
			continue
		}
		if _, err := strconv.Atoi(port); err != nil {
			errs = append(errs, fmt.Errorf("%s address %q: port is not a number", a.what, a.addr))
		}
		switch {
		case a.tls != nil:
		case a.what == "websocket":
			// A WebSocket port exists for sites whose only way out is HTTPS: it is wss:// or nothing.
			errs = append(errs, fmt.Errorf("websocket address %q: the WebSocket port serves TLS only, configure its certificate", a.addr))
		case !IsLoopback(host):
			errs = append(errs, fmt.Errorf("%s address %q is not loopback: plaintext is only allowed on loopback, configure TLS", a.what, a.addr))
		}
	}
	return errors.Join(errs...)
}

// IsLoopback says whether a listen or dial host (no port) stays on this machine: a
// loopback IP or "localhost". An empty host or 0.0.0.0 listens on every interface.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is a running embedded NATS JetStream server.
type Server struct {
	ns  *server.Server
	log *slog.Logger
}

// StartServer starts the server and waits until it accepts connections.
func StartServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nats server config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := &server.Options{
		ServerName:      cfg.Name,
		JetStream:       true,
		JetStreamDomain: cfg.Domain,
		StoreDir:        cfg.StoreDir,
		SyncInterval:    cfg.SyncInterval,
		NoLog:           true,
		NoSigs:          true,
		MaxPayload:      server.MAX_PAYLOAD_SIZE,
	}
	if cfg.MaxStore > 0 {
		opts.JetStreamMaxStore = cfg.MaxStore
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, _ := net.SplitHostPort(cfg.Listen)
		opts.Host = host
		opts.Port, _ = strconv.Atoi(port)
		opts.TLSConfig = cfg.TLS
		// mTLS: the TLS config demands client certificates; the server is told as well so its
		// own checks and monitoring agree with the handshake.
		opts.TLSVerify = cfg.TLS != nil && cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert
	}
	if cfg.WebSocket != "" {
		host, port, _ := net.SplitHostPort(cfg.WebSocket)
		opts.Websocket.Host = host
		opts.Websocket.Port, _ = strconv.Atoi(port)
		opts.Websocket.TLSConfig = cfg.WebSocketTLS
	}
	if cfg.Configure != nil {
		if err := cfg.Configure(opts); err != nil {
			return nil, fmt.Errorf("nats server config: %w", err)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	ns.SetLoggerV2(&natsLogger{log: log.With("component", "nats-server")}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats server %s did not become ready in 30 s (store %s): is the address %q already in use?", cfg.Name, cfg.StoreDir, cfg.Listen)
	}
	return &Server{ns: ns, log: log}, nil
}

// ClientURL is the URL clients outside this process dial (empty when not listening).
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// Addr is the listening address, or nil.
func (s *Server) Addr() net.Addr { return s.ns.Addr() }

// Inner exposes the nats-server for code that must reach its API (accounts, auth).
func (s *Server) Inner() *server.Server { return s.ns }

// Connect opens an in-process connection (no socket, no TCP stack) for services that run in
// the same process as the server.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name(name), nats.InProcessServer(s.ns), nats.MaxReconnects(-1)}, opts...)
	// In process there is no wire to protect: a tls:// URL would make the client insist on a
	// handshake over the pipe, so the URL (never dialled) says nats://.
	u := s.ns.ClientURL()
	if rest, ok := strings.CutPrefix(u, "tls://"); ok {
		u = "nats://" + rest
	}
	nc, err := nats.Connect(u, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect in-process as %s: %w", name, err)
	}
	return nc, nil
}

// Shutdown stops the server after its clients had the chance to drain.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// natsLogger routes the server's own log through slog, at debug below warnings.
type natsLogger struct{ log *slog.Logger }

func (l *natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Tracef(format string, v ...any)  {}
