// Package tcpscan is the tcp_scan probe kind: a TCP connect scan of addresses × ports.
//
// Addresses are IPs, CIDRs and ranges ("10.0.0.1-10.0.0.50", "10.0.0.1-50"); ports are
// numbers, ranges and the presets top100 (nmap's) and discovery. The scan is polite by
// default — 2,000 connection attempts/s for the whole bridge, shared by every tcp_scan
// probe it runs at once (Config.Rate, like nmap's --max-rate for one scanner), at most 32
// connections in flight per address. A probe's rate param can only lower its own share;
// the bridge's budget is lifted only in the bridge's config (rate: 0, for benchmarks).
//
// Timing follows nmap -T4: each address starts from the scan's RTT estimate (500 ms before
// any answer), adapts to its own answers (SRTT + 4·RTTVAR, between 100 ms and 1,250 ms),
// and a port that does not answer is tried again (once by default) with twice the timeout,
// and at least the initial one (a local stall must not hide an open port); a port that
// answered — open, or closed by a reset — never is. An address that never answered and
// whose first 8 retries went unanswered too (a firewall dropping every SYN) gets no more:
// retries are spent where they pay, as nmap's max_successful_tryno does. Addresses are scanned in a
// sliding window in random order, the ports of each in random order, and every address is
// streamed through Emit as soon as all its ports are settled. The final data is a summary.
//
// Only addresses the site allows are scanned (each is checked against Settings.Allowed
// before the scan starts); the others are listed as denied.
//
// Two engines make the attempts. "raw" (the default, Linux): non-blocking sockets and one
// epoll set per CPU, driven by the scan's own loop like nmap's — it never dials anything
// but the checked addresses, but it does not go through Settings.Dial, which would cost a
// goroutine, timers and a netpoller registration per attempt (about 2× slower on loopback,
// see docs/bench/scan.md). "dial" (Config.Engine, and the fallback elsewhere) makes every
// attempt through Settings.Dial from a pool of workers.
package tcpscan

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/tcpscan"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
)

// The contract of the kind (libs/probes/tcpscan): what a probe asks and what it answers.
type (
	Params = contract.Params
)

// Config is the bridge-side configuration of tcp_scan.
type Config struct {
	// Rate is the bridge's scan budget: connection attempts per second of all the
	// tcp_scan probes the bridge runs at once, together (one token bucket holding 20 ms of
	// them). A bridge holding several scan chunks of a run shares this rate between them,
	// so what the site's network sees is this rate, whatever the bridge's concurrency; 0
	// is unlimited. A probe's rate param can only lower its own share.
	Rate float64 `yaml:"rate"`
	// MaxRate is no longer a setting (it bounded what a probe could lift its own rate to,
	// when the rate was per probe): Validate says so, rather than the bridge ignoring it.
	MaxRate float64 `yaml:"max_rate"`
	// MaxInFlight is the default number of connection attempts in flight; probes may ask
	// for more up to MaxInFlightLimit. Both are bounded by half the open-file limit.
	MaxInFlight      int `yaml:"max_in_flight"`
	MaxInFlightLimit int `yaml:"max_in_flight_limit"`
	// PerHost caps the attempts in flight to one address.
	PerHost int `yaml:"per_host"`
	// MaxAddresses and MaxProbes bound the size of one scan.
	MaxAddresses int   `yaml:"max_addresses"`
	MaxProbes    int64 `yaml:"max_probes"`
	// Timing (nmap -T4).
	InitialTimeout time.Duration `yaml:"initial_timeout"`
	MinTimeout     time.Duration `yaml:"min_timeout"`
	MaxTimeout     time.Duration `yaml:"max_timeout"`
	Retries        int           `yaml:"retries"`
	// HostGroup is how many addresses are scanned at once (a sliding window).
	HostGroup int `yaml:"host_group"`
	// ChunkHosts is how many finished addresses one streamed chunk carries at most.
	ChunkHosts int `yaml:"chunk_hosts"`
	// Engine: "" or "raw" connects with non-blocking sockets and epoll (Linux; elsewhere
	// it falls back to dial), "dial" makes every attempt through Settings.Dial. Both scan
	// only addresses that pass Settings.Allowed, checked for each before the scan.
	Engine string `yaml:"engine"`
}

// Validate reports every problem of an operator's config.
func (c Config) Validate() error {
	var errs []error
	switch c.Engine {
	case "", "raw", "dial":
	default:
		errs = append(errs, fmt.Errorf("engine: %q: want raw or dial", c.Engine))
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		errs = append(errs, fmt.Errorf("rate: %v: want connection attempts per second for the whole bridge, ≥ 0 (0 = unlimited)", c.Rate))
	}
	if c.MaxRate != 0 {
		errs = append(errs, fmt.Errorf("max_rate: no longer a setting: rate is now the bridge's budget shared by all its scans, and a probe can only lower its own share; set rate (%v now) to the most the bridge may send and remove max_rate", c.Rate))
	}
	return errors.Join(errs...)
}

// effectiveRate is the most a probe with its own rate (0: none) scans at on a bridge whose
// budget is bridge (0: unlimited); 0 is unlimited.
func effectiveRate(own, bridge float64) float64 {
	switch {
	case own <= 0:
		return bridge
	case bridge <= 0:
		return own
	}
	return min(own, bridge)
}

type factory struct{}

// NewFactory returns the tcp_scan kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec { return contract.Spec }

// DefaultConfig is polite: 2,000 attempts/s for the whole bridge, 1,024 in flight, 32 per address.
func (factory) DefaultConfig() any {
	return Config{
		Rate: 2000, MaxInFlight: 1024, MaxInFlightLimit: 8192, PerHost: 32,
		MaxAddresses: 1 << 18, MaxProbes: 64 << 20,
		InitialTimeout: 500 * time.Millisecond, MinTimeout: 100 * time.Millisecond, MaxTimeout: 1250 * time.Millisecond,
		Retries: 1, HostGroup: 256, ChunkHosts: 256, Engine: "raw",
	}
}

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "tcp_scan: config of type %T", cfg)
	}
	if err := c.Validate(); err != nil {
		return nil, probe.Errorf(probe.CodeBadParams, "tcp_scan config: %v", err)
	}
	fdLimit := raiseNoFile()
	limit := fdLimit / 2
	if limit < 16 {
		limit = 16
	}
	return &runner{cfg: c, set: set, fdBound: limit, budget: newBucket(c.Rate)}, nil
}

// runner is the bridge's one tcp_scan runner: every probe of the kind runs through it, so
// its budget is the bridge's.
type runner struct {
	cfg     Config
	set     probe.Settings
	fdBound int
	budget  *bucket // Config.Rate, shared by every scan running at once; nil: unlimited
}

// plan is a validated scan.
type plan struct {
	addrs    []string // targets as given
	ports    []uint16
	rate     float64
	inFlight int
	perHost  int
	retries  int
	initial  time.Duration
	min, max time.Duration
	chunk    int
	seed     *uint64
}

func (r *runner) plan(req probe.Request) (*plan, error) {
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	c := r.cfg
	pl := &plan{retries: c.Retries, seed: p.Seed}
	pl.addrs = p.Targets
	if len(pl.addrs) == 0 && req.Target != "" {
		for _, t := range strings.Split(req.Target, ",") {
			if t = strings.TrimSpace(t); t != "" {
				pl.addrs = append(pl.addrs, t)
			}
		}
	}
	if len(pl.addrs) == 0 {
		return nil, param.Bad("targets", "empty: give targets or the probe's target")
	}
	portSpec := []string(p.Ports)
	if len(portSpec) == 0 {
		portSpec = []string{"discovery"}
	}
	ports, err := ParsePorts(portSpec)
	if err != nil {
		return nil, param.Bad("ports", "%v", err)
	}
	pl.ports = ports
	if p.Rate != nil {
		switch rate := *p.Rate; {
		case rate < 0 || math.IsNaN(rate) || math.IsInf(rate, 0):
			return nil, param.Bad("rate", "%v: want probes per second ≥ 0 (0 = the bridge's budget alone)", rate)
		default: // above the bridge's budget it changes nothing: the budget still holds
			pl.rate = rate
		}
	}
	maxIF := min(max(c.MaxInFlightLimit, c.MaxInFlight), r.fdBound)
	if pl.inFlight, err = param.Int("max_in_flight", p.MaxInFlight, min(c.MaxInFlight, maxIF), maxIF); err != nil {
		return nil, err
	}
	if pl.perHost, err = param.Int("per_host", p.PerHost, c.PerHost, 1024); err != nil {
		return nil, err
	}
	if p.Retries != nil {
		if *p.Retries < 0 || *p.Retries > 6 {
			return nil, param.Bad("retries", "%d: want 0-6", *p.Retries)
		}
		pl.retries = *p.Retries
	}
	if pl.initial, err = param.Duration("initial_timeout", p.InitialTimeout, c.InitialTimeout, time.Minute); err != nil {
		return nil, err
	}
	if pl.min, err = param.Duration("min_timeout", p.MinTimeout, c.MinTimeout, time.Minute); err != nil {
		return nil, err
	}
	if pl.max, err = param.Duration("max_timeout", p.MaxTimeout, c.MaxTimeout, time.Minute); err != nil {
		return nil, err
	}
	if pl.min > pl.max {
		return nil, param.Bad("min_timeout", "%s is above max_timeout %s", pl.min, pl.max)
	}
	pl.initial = min(max(pl.initial, pl.min), pl.max)
	if pl.chunk, err = param.Int("chunk_hosts", p.ChunkHosts, c.ChunkHosts, 65536); err != nil {
		return nil, err
	}
	return pl, nil
}

func (r *runner) Run(ctx context.Context, req probe.Request, emit probe.Emit) (any, error) {
	pl, err := r.plan(req)
	if err != nil {
		return nil, err
	}
	addrs, err := ParseTargets(pl.addrs, r.cfg.MaxAddresses)
	if err != nil {
		return nil, param.Bad("targets", "%v", err)
	}
	if n := int64(len(addrs)) * int64(len(pl.ports)); r.cfg.MaxProbes > 0 && n > r.cfg.MaxProbes {
		return nil, param.Bad("targets", "%d addresses × %d ports is beyond the limit of %d probes per scan", len(addrs), len(pl.ports), r.cfg.MaxProbes)
	}
	return r.scan(ctx, pl, addrs, emit)
}
