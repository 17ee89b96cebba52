// Package bridge is the site agent: it dials out to the hub (never listens), enrolls with its
// NKey, pulls its site's probes per priority into bounded worker pools, runs them on the
// local network within the site's allowed ranges, and sends results home through a
// store-and-forward outbox.
package bridge

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/bridge/collect"
)

// Config of a bridge. Flags, OUTPOST_BRIDGE_* and an optional YAML file fill it
// (cmd/outpost-bridge); Validate reports every problem at once.
type Config struct {
	Hub     string   `yaml:"hub"`
	Site    string   `yaml:"site"`
	Name    string   `yaml:"name"`
	Token   string   `yaml:"token"`
	DataDir string   `yaml:"data"`
	Allow   []string `yaml:"allow"`
	CAFile  string   `yaml:"ca"`
	// Client certificate for mTLS to the hub.
	CertFile string `yaml:"cert"`
	// Proxy is an HTTP CONNECT proxy to reach the hub through (http://[user:pw@]host:port);
	// empty: HTTPS_PROXY/NO_PROXY decide.
	Proxy string `yaml:"proxy"`
	// InsecurePlaintext allows nats:// or ws:// to a hub that is not on loopback.
	InsecurePlaintext bool           `yaml:"insecure_plaintext"`
	KeyFile           string         `yaml:"key"`
	Pools             map[string]int `yaml:"pools"`
	OutboxMax         ByteSize       `yaml:"outbox_max"`
	// Capabilities limits what this bridge offers (default: every kind it has).
	Capabilities []string `yaml:"capabilities"`
	// Apps dedicates the bridge to some applications (bus.BridgeApps; default all): it is
	// given, and pulls, only their probe lanes (plus ad-hoc probes, which every bridge takes).
	Apps []string `yaml:"apps"`
	// Kinds changes probe kinds' configs (limits, allowed directories), by kind name: see
	// KindConfigs. Only the config file sets it.
	Kinds   map[string]yaml.Node `yaml:"kinds"`
	Version string               `yaml:"-"`
	// Collect turns on event collectors, each on a site-LAN address (off by default).
	Collect CollectConfig `yaml:"collect"`
}

// CollectConfig names the collectors' addresses; the webhook's key comes from
// OUTPOST_BRIDGE_WEBHOOK_KEY only (never a flag: argv is visible to every local user).
type CollectConfig struct {
	Syslog string `yaml:"syslog"`
	// SyslogTLS: syslog over TLS (RFC 5425) with this PEM certificate and key, on
	// SyslogTLSAddr (default: port 6514 of the Syslog host).
	SyslogTLSCert string `yaml:"syslog_tls_cert"`
	SyslogTLSKey  string `yaml:"syslog_tls_key"`
	SyslogTLSAddr string `yaml:"syslog_tls_addr"`
	Traps         string `yaml:"traps"`
	// TrapUsers are the SNMPv3 USM users whose traps and informs are accepted (their
	// passphrases live in this file only); TrapEngineID the collector's engine ID in hex.
	TrapUsers    []collect.TrapUser `yaml:"trap_users"`
	TrapEngineID string             `yaml:"trap_engine_id"`
	Webhook      string             `yaml:"webhook"`
	WebhookKey   string             `yaml:"-"`
	// Batch bounds how syslog lines and traps gather into one outbox message (and how
	// events of a webhook array are split): max_events, max_bytes, linger.
	Batch collect.BatchConfig `yaml:"batch"`
}

// DefaultConfig: MID server users know these pool sizes (interactive 10, expedited 20,
// standard 25) and a 1 GiB buffer.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Name:    strings.ToLower(host),
		DataDir: "./bridge-data",
		Pools: map[string]int{envelope.PriorityInteractive: 10, envelope.PriorityExpedited: 20,
			envelope.PriorityStandard: 25},
		OutboxMax: 1 << 30,
		Version:   "dev",
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Hub == "" {
		errs = append(errs, errors.New("--hub is required (nats://hub:4222, tls://hub:4222 or wss://hub:443)"))
	} else if err := (bus.ConnectConfig{URL: c.Hub, CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile, Proxy: c.Proxy}).Validate(); err != nil {
		errs = append(errs, err)
	} else if remote := c.PlaintextRemote(); len(remote) > 0 && !c.InsecurePlaintext {
		errs = append(errs, fmt.Errorf("--hub %s: plaintext to a hub that is not on loopback would send the token and every result in clear: "+
			"use tls://HOST:PORT or wss://HOST:PORT with --ca <hub data>/tls/ca.pem (or --insecure-plaintext, for a test network only)", strings.Join(remote, ",")))
	}
	if !bus.ValidName(c.Site) {
		errs = append(errs, fmt.Errorf("--site %q: use 1-64 of a-z, 0-9 and -", c.Site))
	}
	if !bus.ValidName(c.Name) {
		errs = append(errs, fmt.Errorf("--name %q: use 1-64 of a-z, 0-9 and - (default: the host name)", c.Name))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data is required: the bridge keeps its identity and outbox there"))
	}
	for _, a := range c.Allow {
		if _, err := netip.ParsePrefix(a); err != nil {
			errs = append(errs, fmt.Errorf("--allow %q: not a CIDR such as 10.1.0.0/16", a))
		}
	}
	for _, p := range envelope.Priorities {
		if n := c.Pools[p]; n < 1 || n > 10_000 {
			errs = append(errs, fmt.Errorf("--pool-%s %d: want 1..10000", p, n))
		}
	}
	if err := (collect.Config{Syslog: c.Collect.Syslog, SyslogTLS: c.Collect.SyslogTLSAddr, SyslogTLSCert: c.Collect.SyslogTLSCert, SyslogTLSKey: c.Collect.SyslogTLSKey, Traps: c.Collect.Traps, TrapUsers: c.Collect.TrapUsers, TrapEngineID: c.Collect.TrapEngineID, Site: c.Site, Webhook: c.Collect.Webhook, WebhookKey: c.Collect.WebhookKey, Batch: c.Collect.Batch}).Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := bus.CheckApps(c.Apps); err != nil {
		errs = append(errs, err)
	}
	if c.OutboxMax < 1<<20 {
		errs = append(errs, fmt.Errorf("--outbox-max %s: want at least 1MiB", c.OutboxMax))
	}
	return errors.Join(errs...)
}

// PlaintextRemote lists the hub URLs that are plaintext (nats://, ws://) to a host other than
// loopback.
func (c Config) PlaintextRemote() []string {
	var out []string
	for _, raw := range strings.Split(c.Hub, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			continue
		}
		if (u.Scheme == "nats" || u.Scheme == "ws") && !bus.IsLoopback(u.Hostname()) {
			out = append(out, u.Redacted())
		}
	}
	return out
}

// ByteSize parses sizes such as 512MiB, 1GiB, 10GB or plain bytes.
type ByteSize int64

func (b ByteSize) String() string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	}
	return fmt.Sprintf("%dB", int64(b))
}

// Set implements flag.Value.
func (b *ByteSize) Set(s string) error {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	s = strings.TrimSpace(s)
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			var n int64
			if _, err := fmt.Sscan(strings.TrimSpace(num), &n); err != nil || n < 0 {
				return fmt.Errorf("size %q: want e.g. 512MiB or 1GiB", s)
			}
			*b = ByteSize(n * u.mult)
			return nil
		}
	}
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil || n < 0 {
		return fmt.Errorf("size %q: want e.g. 512MiB or 1GiB", s)
	}
	*b = ByteSize(n)
	return nil
}

// UnmarshalText lets YAML take "1GiB".
func (b *ByteSize) UnmarshalText(t []byte) error { return b.Set(string(t)) }
