package bus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnectConfig describes how a process outside the hub (a bridge, a service replica) dials it.
type ConnectConfig struct {
	URL  string // nats://, tls:// or wss:// (comma-separated for a cluster)
	Name string // connection name, shown in the server's monitoring
	// TLS: CA to verify the hub, and an optional client certificate for mTLS.
	CAFile, CertFile, KeyFile string
	// Credentials: a creds file (JWT + NKey seed), or an NKey seed file, or neither.
	CredsFile, NKeySeedFile string
	// Proxy is an HTTP CONNECT proxy every hub connection goes through:
	// http://[user:password@]host:port. Empty: ProxyFromEnvironment decides.
	Proxy string
	// ProxyFromEnvironment honours HTTPS_PROXY (HTTP_PROXY for plaintext hub URLs) and
	// NO_PROXY when Proxy is empty; loopback hubs are never proxied that way.
	ProxyFromEnvironment bool
	// Options are appended last (e.g. nats.Nkey with an in-memory key pair).
	Options []nats.Option
	Logger  *slog.Logger
	// OnError, when set, is also told every asynchronous error of the connection (after it is
	// logged): a permissions violation arrives only this way, and a bridge refused its own
	// probe consumer must learn so to re-read its groups (services/bridge/groups.go).
	OnError func(sub *nats.Subscription, err error)
}

// Validate reports every problem at once.
func (c ConnectConfig) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("hub URL is empty: give nats://host:4222, tls://host:4222 or wss://host:443"))
	}
	for _, raw := range splitURLs(c.URL) {
		u, err := url.Parse(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("hub URL %q: %w", raw, err))
			continue
		}
		switch u.Scheme {
		case "nats", "tls", "wss", "ws":
		default:
			errs = append(errs, fmt.Errorf("hub URL %q: scheme %q, want nats, tls or wss", raw, u.Scheme))
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("client certificate and key must be given together"))
	}
	if c.Proxy != "" {
		if _, err := ParseProxy(c.Proxy); err != nil {
			errs = append(errs, err)
		}
	}
	if c.CredsFile != "" && c.NKeySeedFile != "" {
		errs = append(errs, errors.New("give a creds file or an nkey seed file, not both"))
	}
	for _, f := range []string{c.CAFile, c.CertFile, c.KeyFile, c.CredsFile, c.NKeySeedFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

func splitURLs(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Connect dials the hub and keeps reconnecting forever with jittered backoff: a site behind a
// flaky WAN must come back on its own. Connection events are logged.
func Connect(cfg ConnectConfig) (*nats.Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "bus", "hub", redactURL(cfg.URL))
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(20 * time.Second),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info("connected to hub", "server", nc.ConnectedUrlRedacted()) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from hub", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected to hub", "server", nc.ConnectedUrlRedacted()) }),
		// Every failed attempt, the first connection's included, says why: a bridge that
		// never comes up must tell its operator what to change.
		nats.ReconnectErrHandler(newDialFailLog(log, cfg.URL).report),
		nats.ClosedHandler(func(*nats.Conn) { log.Info("hub connection closed") }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("hub connection error", "subject", subj, "err", err)
			if cfg.OnError != nil {
				cfg.OnError(sub, err)
			}
		}),
	}
	if cfg.CAFile != "" || cfg.CertFile != "" {
		tc, err := clientTLS(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	if cfg.Proxy != "" || cfg.ProxyFromEnvironment {
		d, err := newProxyDialer(cfg)
		if err != nil {
			return nil, fmt.Errorf("connect: %w", err)
		}
		// The proxy resolves the hub's name: the site may have no DNS for it.
		opts = append(opts, nats.SetCustomDialer(d), nats.SkipHostLookup())
		if cfg.Proxy != "" {
			log.Info("hub connections go through a proxy", "proxy", redactURL(cfg.Proxy))
		}
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nkey seed %s: %w", cfg.NKeySeedFile, err)
		}
		opts = append(opts, o)
	}
	opts = append(opts, cfg.Options...)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redactURL(cfg.URL), err)
	}
	return nc, nil
}

func clientTLS(cfg ConnectConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("hub CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("hub CA %s: no PEM certificate found", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// redactURL drops user info from URLs so passwords never reach a log.
func redactURL(s string) string {
	var out []string
	for _, raw := range splitURLs(s) {
		u, err := url.Parse(raw)
		if err != nil {
			out = append(out, "<unparsable url>")
			continue
		}
		if u.User != nil {
			u.User = url.User("redacted")
		}
		out = append(out, u.String())
	}
	if len(out) == 1 {
		return out[0]
	}
	return fmt.Sprint(out)
}

// dialFailLog logs why the hub cannot be reached, once per distinct reason a minute: the
// client retries every second or two, forever.
type dialFailLog struct {
	log    *slog.Logger
	scheme string
	mu     sync.Mutex
	last   string
	at     time.Time
}

func newDialFailLog(log *slog.Logger, urls string) *dialFailLog {
	d := &dialFailLog{log: log}
	if us := splitURLs(urls); len(us) > 0 {
		if u, err := url.Parse(us[0]); err == nil {
			d.scheme = u.Scheme
		}
	}
	return d
}

func (d *dialFailLog) report(_ *nats.Conn, err error) {
	if err == nil {
		return
	}
	msg := err.Error()
	d.mu.Lock()
	now := time.Now()
	if msg == d.last && now.Sub(d.at) < time.Minute {
		d.mu.Unlock()
		return
	}
	d.last, d.at = msg, now
	d.mu.Unlock()
	args := []any{"err", msg}
	if h := DialHint(d.scheme, err); h != "" {
		args = append(args, "hint", h)
	}
	d.log.Warn("cannot connect to the hub; retrying", args...)
}

// DialHint says what to change when a connection to the hub fails for a reason an operator
// can fix (empty when there is nothing specific to say).
func DialHint(scheme string, err error) string {
	var unknownCA x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	var host x509.HostnameError
	var expired x509.CertificateInvalidError
	plaintext := scheme == "nats" || scheme == "ws"
	switch {
	case plaintext && (errors.As(err, &unknownCA) || errors.As(err, &verify) || errors.Is(err, nats.ErrSecureConnRequired)):
		return "the hub requires TLS: dial it as tls://HOST:PORT (or wss://) and trust it with --ca <hub data>/tls/ca.pem"
	case errors.As(err, &host):
		return "the hub's certificate does not name the host in --hub: dial a name or address it has, or add it on the hub with --tls-san"
	case errors.As(err, &expired) && expired.Reason == x509.Expired:
		return "the hub's certificate has expired (or this machine's clock is wrong): restart the hub to renew it"
	case errors.As(err, &unknownCA) || errors.As(err, &verify):
		return "the hub's certificate is not signed by a CA this bridge trusts: give --ca <hub data>/tls/ca.pem"
	case scheme == "ws" && strings.Contains(err.Error(), "400"):
		return "the hub's WebSocket port serves TLS only: dial it as wss:// with --ca <hub data>/tls/ca.pem"
	}
	return ""
}

// RedactURL is a hub URL (or comma-separated list) fit for a log: user info replaced.
func RedactURL(s string) string { return redactURL(s) }
