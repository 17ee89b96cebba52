// Package collect is the bridge's event collectors: syslog (RFC 5424 and RFC 3164 over UDP
// and TCP), SNMP v1/v2c traps and a JSON webhook. Each listens only on the site-LAN address
// it is given and is off unless given one. What they collect becomes envelope.Events handed
// to a Sink — the bridge's outbox, so a hub or WAN outage loses nothing — and bad input (a
// malformed line, an oversize body, a wrong key) is counted, and kept with its reason where
// there is something to keep, while the collector goes on.
package collect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Sink takes what the collectors produce.
type Sink interface {
	// Events stores events of one source; when it returns nil they are on local disk.
	Events(ctx context.Context, source string, evs []*envelope.Event) error
	// Reject keeps bad input with its reason (a dead letter); sample is the input, cut to a
	// size that fits a bus message.
	Reject(ctx context.Context, source, reason string, sample []byte)
}

// Config of the collectors; an empty address leaves that collector off.
type Config struct {
	Site string
	// Syslog listens on this address over both UDP and TCP.
	Syslog string
	// SyslogTLSCert and SyslogTLSKey (PEM files) turn on syslog over TLS (RFC 5425:
	// octet-counting frames) on SyslogTLS, by default port 6514 of the Syslog host.
	SyslogTLS, SyslogTLSCert, SyslogTLSKey string
	// Traps listens for SNMP v1/v2c traps (and informs) over UDP, and v3 ones of TrapUsers.
	Traps     string
	TrapUsers []TrapUser
	// TrapEngineID is the collector's SNMP engine ID in hex (v3 informs are sent to it);
	// default: one derived from the site.
	TrapEngineID string
	// Webhook serves POST of JSON events over HTTP; WebhookKey is the bearer key it requires.
	Webhook    string
	WebhookKey string
	// MaxBody bounds a webhook body (default 1 MiB): over it is refused with 413.
	MaxBody int64
	// MaxMessage bounds one syslog message (default 64 KiB).
	MaxMessage int
	// MaxConns bounds concurrent syslog TCP connections (default 256).
	MaxConns int
	// Batch bounds how syslog lines and traps gather into one stored message (zero fields:
	// DefaultBatchConfig).
	Batch  BatchConfig
	Clock  clock.Clock
	Logger *slog.Logger
}

// SampleMax is how much of a rejected input a dead letter keeps.
const SampleMax = 4 << 10

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	for _, a := range [][2]string{{"--collect-syslog", c.Syslog}, {"--collect-traps", c.Traps}, {"--collect-webhook", c.Webhook}} {
		if a[1] == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a[1]); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want HOST:PORT, an address of the site LAN such as 10.1.0.5:514", a[0], a[1]))
		}
	}
	for i, u := range c.TrapUsers {
		errs = append(errs, u.validate(i)...)
	}
	if _, err := engineID(c.TrapEngineID, c.Site); err != nil {
		errs = append(errs, err)
	}
	if (c.SyslogTLSCert == "") != (c.SyslogTLSKey == "") {
		errs = append(errs, errors.New("--collect-syslog-tls: want CERT,KEY — a PEM certificate file and its key file"))
	}
	if c.SyslogTLSCert != "" {
		addr := c.syslogTLSAddr()
		if addr == "" {
			errs = append(errs, errors.New("--collect-syslog-tls needs an address: --collect-syslog HOST:PORT (TLS then listens on HOST:6514) or --collect-syslog-tls-addr HOST:PORT"))
		} else if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("--collect-syslog-tls-addr %q: want HOST:PORT, an address of the site LAN such as 10.1.0.5:6514", addr))
		}
	}
	if err := c.Batch.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Webhook != "" && c.WebhookKey == "" {
		errs = append(errs, errors.New("--collect-webhook needs OUTPOST_BRIDGE_WEBHOOK_KEY: senders present it as a bearer key"))
	}
	return errors.Join(errs...)
}

// syslogTLSAddr is where syslog over TLS listens: SyslogTLS, else the Syslog host on the
// RFC 5425 port.
func (c Config) syslogTLSAddr() string {
	if c.SyslogTLS != "" {
		return c.SyslogTLS
	}
	if host, _, err := net.SplitHostPort(c.Syslog); err == nil {
		return net.JoinHostPort(host, "6514")
	}
	return ""
}

// Counts of one collector.
type Counts struct {
	Accepted int64 `json:"accepted"` // events stored
	Rejected int64 `json:"rejected"` // bad input: malformed, oversize, refused key
	Dropped  int64 `json:"dropped"`  // good events the sink could not store (outbox full)
	// Batches is how many times events were handed to the sink (one stored message each,
	// unless over the sink's bounds); Accepted / Batches is the mean events per batch.
	Batches  int64 `json:"batches"`
	MaxBatch int64 `json:"max_batch"` // most events in one batch
	Pending  int64 `json:"pending"`   // events waiting for their batch to be stored
}

type counter struct{ accepted, rejected, dropped, batches, maxBatch atomic.Int64 }

func (c *counter) counts() Counts {
	return Counts{Accepted: c.accepted.Load(), Rejected: c.rejected.Load(), Dropped: c.dropped.Load(),
		Batches: c.batches.Load(), MaxBatch: c.maxBatch.Load()}
}

// Collectors are the running collectors.
type Collectors struct {
	cfg   Config
	sink  Sink
	log   *slog.Logger
	clock clock.Clock
	stats map[string]*counter // by source
	// batchers gather syslog lines and traps into batches, by source (written at start
	// only; readers hold their own batcher, so starting traps never races syslog readers).
	batchers    map[string]*batcher
	syslogBatch *batcher
	wg          sync.WaitGroup
	stops       []func()
	// Addrs are the addresses actually bound, by source (tests listen on port 0).
	Addrs map[string]net.Addr
}

// Start binds every configured collector (an address that cannot be bound is an error at
// once, not a silent gap) and serves until ctx ends or Close.
func Start(ctx context.Context, cfg Config, sink Sink) (*Collectors, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 64 << 10
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 256
	}
	cfg.Batch = cfg.Batch.WithDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Collectors{cfg: cfg, sink: sink, log: log.With("component", "collect"), clock: clock.Or(cfg.Clock),
		stats: map[string]*counter{}, batchers: map[string]*batcher{}, Addrs: map[string]net.Addr{}}
	starts := []struct {
		addr  string
		start func(context.Context) error
	}{{cfg.Syslog, c.startSyslog}, {cfg.SyslogTLSCert, c.startSyslogTLS}, {cfg.Traps, c.startTraps}, {cfg.Webhook, c.startWebhook}}
	for _, s := range starts {
		if s.addr == "" {
			continue
		}
		if err := s.start(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Close stops every collector, waits for them, then stores the batches still pending.
func (c *Collectors) Close() {
	for _, stop := range c.stops {
		stop()
	}
	c.wg.Wait()
	for _, b := range c.batchers {
		b.close()
	}
}

// Counts are every collector's counts, by source.
func (c *Collectors) Counts() map[string]Counts {
	out := map[string]Counts{}
	for src, ct := range c.stats {
		n := ct.counts()
		if b := c.batchers[src]; b != nil {
			n.Pending = int64(b.pending())
		}
		out[src] = n
	}
	return out
}

// batcher is the source's batcher, made on first use (at start, before readers run).
func (c *Collectors) batcher(ctx context.Context, source string) *batcher {
	if c.batchers[source] == nil {
		c.batchers[source] = newBatcher(c, source, ctx)
	}
	return c.batchers[source]
}

func (c *Collectors) counter(source string) *counter {
	if c.stats[source] == nil {
		c.stats[source] = &counter{}
	}
	return c.stats[source]
}

// store hands events to the sink and counts them.
func (c *Collectors) store(ctx context.Context, source string, evs []*envelope.Event) error {
	ct := c.stats[source]
	if err := c.sink.Events(ctx, source, evs); err != nil {
		ct.dropped.Add(int64(len(evs)))
		c.log.Warn("events not stored", "source", source, "events", len(evs), "err", err)
		return err
	}
	ct.accepted.Add(int64(len(evs)))
	ct.batches.Add(1)
	for n := int64(len(evs)); ; {
		m := ct.maxBatch.Load()
		if n <= m || ct.maxBatch.CompareAndSwap(m, n) {
			break
		}
	}
	return nil
}

// reject counts bad input and keeps it with its reason.
func (c *Collectors) reject(ctx context.Context, source, reason string, input []byte) {
	c.stats[source].rejected.Add(1)
	c.log.Debug("bad input", "source", source, "reason", reason)
	c.sink.Reject(ctx, source, reason, input[:min(len(input), SampleMax)])
}
