// Package cli reads the bridge's configuration from flags, OUTPOST_BRIDGE_* variables and an
// optional YAML file (in rising order of precedence: file < env < flags) and runs it.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/shutdown"
	"github.com/outpost-dev/outpost/libs/telemetry"
	"github.com/outpost-dev/outpost/libs/version"
	"github.com/outpost-dev/outpost/services/bridge"
	"github.com/outpost-dev/outpost/services/bridge/probe/kinds"
	"github.com/outpost-dev/outpost/services/bridge/upgrade"
)

type listFlag struct{ v *[]string }

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}
func (l listFlag) Set(s string) error { *l.v = append(*l.v, s); return nil }

// Main runs the bridge (or one of its commands: status, service) and returns the exit
// code: 0 after a clean stop or a drain, 1 on failure, 2 on bad configuration.
func Main(args []string, stderr io.Writer) int {
	return MainIO(args, os.Stdout, stderr)
}

// MainIO is Main with the standard output given (status prints there).
func MainIO(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "status":
			return statusMain(args[1:], stdout, stderr)
		case "service":
			return serviceMain(args[1:], stdout, stderr)
		}
	}
	return runMain(context.Background(), args, stderr)
}

// runMain runs the bridge until parent ends or a signal comes.
func runMain(parent context.Context, args []string, stderr io.Writer) int {
	cfg := bridge.DefaultConfig()
	cfg.Version = version.Version
	fs := flag.NewFlagSet("outpost-bridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", os.Getenv("OUTPOST_BRIDGE_CONFIG"), "YAML configuration file (flags and env override it)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (env OUTPOST_LOG_LEVEL)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	// Probes in flight get 30 s to finish (bridge.Run); the outbox flush and heartbeats fit
	// in the rest.
	shutdownTimeout := fs.Duration("shutdown-timeout", 45*time.Second, "on SIGINT/SIGTERM, drain for at most this long, then exit (a second signal exits at once)")
	var allow, caps, apps []string
	flagCfg := struct {
		hub, site, name, token, data, ca, cert, key, proxy string
		syslog, traps, webhook                             string
		syslogTLS, syslogTLSAddr                           string
		insecure                                           bool
		batchMax                                           int
		batchLinger                                        time.Duration
		pools                                              map[string]*int
		outbox                                             bridge.ByteSize
	}{pools: map[string]*int{}}
	fs.StringVar(&flagCfg.hub, "hub", "", "hub URL: nats://host:4222, tls://host:4222 or wss://host:443 (env OUTPOST_BRIDGE_HUB)")
	fs.StringVar(&flagCfg.site, "site", "", "site this bridge serves (env OUTPOST_BRIDGE_SITE)")
	fs.StringVar(&flagCfg.name, "name", "", "agent name (default: the host name; env OUTPOST_BRIDGE_NAME)")
	fs.StringVar(&flagCfg.token, "token", "", "enrollment token from `outpost site add` (env OUTPOST_BRIDGE_TOKEN)")
	fs.StringVar(&flagCfg.data, "data", "", "data directory: identity keys and outbox (default ./bridge-data; env OUTPOST_BRIDGE_DATA)")
	fs.Var(listFlag{&allow}, "allow", "CIDR this bridge may probe, narrowing the site's ranges (repeatable; env OUTPOST_BRIDGE_ALLOW, comma-separated)")
	fs.Var(listFlag{&caps}, "capability", "offer only this capability (repeatable; default: all)")
	fs.Var(listFlag{&apps}, "apps", "serve only these applications, comma-separated: "+strings.Join(bus.BridgeApps, ",")+" (default: all; env OUTPOST_BRIDGE_APPS)")
	fs.StringVar(&flagCfg.ca, "ca", "", "CA file to verify the hub (env OUTPOST_BRIDGE_CA)")
	fs.StringVar(&flagCfg.cert, "cert", "", "client certificate for mTLS (env OUTPOST_BRIDGE_CERT)")
	fs.StringVar(&flagCfg.key, "key", "", "client key for mTLS (env OUTPOST_BRIDGE_KEY)")
	fs.StringVar(&flagCfg.proxy, "proxy", "", "HTTP CONNECT proxy to reach the hub through: http://[user:password@]host:port (env OUTPOST_BRIDGE_PROXY; default: HTTPS_PROXY, NO_PROXY)")
	fs.BoolVar(&flagCfg.insecure, "insecure-plaintext", false, "allow nats:// or ws:// to a hub that is not on loopback (token and results in clear; test networks only)")
	for _, p := range envelope.Priorities {
		flagCfg.pools[p] = fs.Int("pool-"+p, 0, fmt.Sprintf("%s workers (default %d)", p, cfg.Pools[p]))
	}
	fs.StringVar(&flagCfg.syslog, "collect-syslog", "", "collect syslog (RFC 5424 and 3164, UDP and TCP) on this site-LAN address, e.g. 10.1.0.5:514 (default off)")
	fs.StringVar(&flagCfg.syslogTLS, "collect-syslog-tls", "", "also collect syslog over TLS (RFC 5425) with this PEM certificate and key: CERT,KEY (listens on port 6514 of the --collect-syslog host unless --collect-syslog-tls-addr)")
	fs.StringVar(&flagCfg.syslogTLSAddr, "collect-syslog-tls-addr", "", "site-LAN address of syslog over TLS, e.g. 10.1.0.5:6514 (default: the --collect-syslog host, port 6514)")
	fs.StringVar(&flagCfg.traps, "collect-traps", "", "collect SNMP v1/v2c traps and informs on this site-LAN address, e.g. 10.1.0.5:162, and v3 ones of the config file's collect.trap_users (default off)")
	fs.StringVar(&flagCfg.webhook, "collect-webhook", "", "collect JSON events POSTed to this site-LAN address, e.g. 10.1.0.5:8088; needs OUTPOST_BRIDGE_WEBHOOK_KEY (default off)")
	fs.IntVar(&flagCfg.batchMax, "collect-batch-max", 0, "most syslog lines or traps stored in one message, 1..1000 (1: each on its own; default 500; config collect.batch.max_events)")
	fs.DurationVar(&flagCfg.batchLinger, "collect-batch-linger", 0, "longest a collected syslog line or trap waits in memory for its batch, at most 1s (default 25ms; config collect.batch.linger)")
	fs.Var(&flagCfg.outbox, "outbox-max", "outbox size limit; when full the bridge takes no new work (default 1GiB)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stderr, "outpost-bridge", version.Version)
		return 0
	}
	if *configFile != "" {
		b, err := os.ReadFile(*configFile)
		if err != nil {
			fmt.Fprintln(stderr, "error:", err)
			return 2
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintf(stderr, "error: %s: %v\n", *configFile, err)
			return 2
		}
	}
	env := func(k string, dst *string) {
		if v := os.Getenv("OUTPOST_BRIDGE_" + k); v != "" {
			*dst = v
		}
	}
	env("HUB", &cfg.Hub)
	env("SITE", &cfg.Site)
	env("NAME", &cfg.Name)
	env("TOKEN", &cfg.Token)
	env("DATA", &cfg.DataDir)
	env("CA", &cfg.CAFile)
	env("CERT", &cfg.CertFile)
	env("KEY", &cfg.KeyFile)
	env("PROXY", &cfg.Proxy)
	env("COLLECT_SYSLOG", &cfg.Collect.Syslog)
	env("COLLECT_TRAPS", &cfg.Collect.Traps)
	env("COLLECT_WEBHOOK", &cfg.Collect.Webhook)
	if v := os.Getenv("OUTPOST_BRIDGE_ALLOW"); v != "" {
		cfg.Allow = strings.Split(v, ",")
	}
	if v := os.Getenv("OUTPOST_BRIDGE_APPS"); v != "" {
		cfg.Apps = splitList(v)
	}
	var errs []error
	if v := os.Getenv("OUTPOST_BRIDGE_OUTBOX_MAX"); v != "" {
		if err := cfg.OutboxMax.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("OUTPOST_BRIDGE_OUTBOX_MAX: %w", err))
		}
	}
	for _, p := range envelope.Priorities {
		if v := os.Getenv("OUTPOST_BRIDGE_POOL_" + strings.ToUpper(p)); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("OUTPOST_BRIDGE_POOL_%s %q: not a number", strings.ToUpper(p), v))
			}
			cfg.Pools[p] = n
		}
	}
	set := func(v string, dst *string) {
		if v != "" {
			*dst = v
		}
	}
	set(flagCfg.hub, &cfg.Hub)
	set(flagCfg.site, &cfg.Site)
	set(flagCfg.name, &cfg.Name)
	set(flagCfg.token, &cfg.Token)
	set(flagCfg.data, &cfg.DataDir)
	set(flagCfg.ca, &cfg.CAFile)
	set(flagCfg.cert, &cfg.CertFile)
	set(flagCfg.key, &cfg.KeyFile)
	set(flagCfg.proxy, &cfg.Proxy)
	set(flagCfg.syslog, &cfg.Collect.Syslog)
	set(flagCfg.traps, &cfg.Collect.Traps)
	if flagCfg.syslogTLS != "" {
		cert, key, _ := strings.Cut(flagCfg.syslogTLS, ",")
		cfg.Collect.SyslogTLSCert, cfg.Collect.SyslogTLSKey = strings.TrimSpace(cert), strings.TrimSpace(key)
	}
	set(flagCfg.syslogTLSAddr, &cfg.Collect.SyslogTLSAddr)
	set(flagCfg.webhook, &cfg.Collect.Webhook)
	if flagCfg.batchMax != 0 {
		cfg.Collect.Batch.MaxEvents = flagCfg.batchMax
	}
	if flagCfg.batchLinger != 0 {
		cfg.Collect.Batch.Linger = flagCfg.batchLinger
	}
	cfg.Collect.WebhookKey = os.Getenv("OUTPOST_BRIDGE_WEBHOOK_KEY")
	if flagCfg.insecure {
		cfg.InsecurePlaintext = true
	}
	if len(allow) > 0 {
		cfg.Allow = allow
	}
	if len(caps) > 0 {
		cfg.Capabilities = caps
	}
	if len(apps) > 0 {
		cfg.Apps = splitList(strings.Join(apps, ","))
	}
	for p, n := range flagCfg.pools {
		if *n != 0 {
			cfg.Pools[p] = *n
		}
	}
	if flagCfg.outbox != 0 {
		cfg.OutboxMax = flagCfg.outbox
	}
	if _, err := bridge.KindConfigs(kinds.All(), cfg.Kinds); err != nil {
		// every line names the file: kinds.<kind>.<setting> (line N) is in it
		for _, line := range strings.Split(err.Error(), "\n") {
			errs = append(errs, fmt.Errorf("%s: %s", *configFile, line))
		}
	}
	if err := errors.Join(append(errs, cfg.Validate())...); err != nil {
		fmt.Fprintln(stderr, "error: invalid configuration:\n ", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 2
	}
	lc := telemetry.LogConfigFromEnv()
	if *logLevel != "" {
		lc.Level = *logLevel
	}
	log, err := telemetry.NewLogger(stderr, lc)
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 2
	}
	ctx, stop, err := shutdown.Notify(parent, shutdown.Config{Deadline: *shutdownTimeout, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "error: --shutdown-timeout:", err)
		return 2
	}
	defer stop()
	// OTLP traces when OTEL_EXPORTER_OTLP_* asks for them (off otherwise), flushed at exit.
	tel, err := telemetry.Setup(ctx, "outpost-bridge", version.Version)
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 2
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(fctx)
	}()
	// Self-upgrade (services/bridge/upgrade): before anything opens the data dir, a trial build
	// that died is rolled back, and the build the data dir's current points at runs instead
	// of this installed binary.
	if self, err := os.Executable(); err == nil {
		d, err := upgrade.Launch(cfg.DataDir, self, version.Version, os.Getenv(upgrade.TrialEnv), time.Now().UTC())
		switch {
		case err != nil:
			log.Error("self-upgrade state unreadable: running this build", "err", err)
		case d.Exec != "":
			log.Info("running the upgraded build from the data dir", "build", d.Exec, "upgrade", d.Record.String())
			err := upgrade.Exec(d)
			log.Error("could not run the upgraded build: running this one", "build", d.Exec, "err", err)
		case d.Record.State == upgrade.StateRolledBack:
			log.Warn("self-upgrade rolled back", "upgrade", d.Record.String())
		}
	}
	err = bridge.Run(ctx, cfg, bridge.Deps{Logger: log, Kinds: kinds.All(), SelfUpgrade: true, Tracer: tel.Tracer})
	if re, ok := errors.AsType[*bridge.RestartError](err); ok {
		stop()
		log.Info("re-executing", "build", re.Decision.Exec)
		err = upgrade.Exec(re.Decision)
		log.Error("re-execute failed", "build", re.Decision.Exec, "err", err)
		return 1
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("bridge stopped", "err", err)
		return 1
	}
	return 0
}

// splitList splits a comma-separated list, dropping blanks and duplicates.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
