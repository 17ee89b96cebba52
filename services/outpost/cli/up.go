package cli

import (
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-dev/outpost/libs/shutdown"
	"github.com/outpost-dev/outpost/libs/telemetry"
	"github.com/outpost-dev/outpost/services/correlation"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

func newUp(g *globals) *cobra.Command {
	cfg := hub.DefaultConfig()
	var logLevel, logFormat string
	var notify []string
	shutdownTimeout := 30 * time.Second
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole hub in one process: embedded NATS JetStream, every service, the gateway",
		Long: `Run the whole hub in one process: the embedded NATS JetStream server (its client port
is where bridges connect), every hub service, and the gateway's HTTP API.
The first start creates an admin API token and writes it to <data>/admin.token.
Bound off loopback (or with --wss) the hub serves TLS: with --tls-cert/--tls-key, or with a
CA and certificate it makes in <data>/tls/ — bridges trust it with --ca <data>/tls/ca.pem.
SIGINT or SIGTERM stops it cleanly within --shutdown-timeout (a second signal: at once); restarting on the same --data keeps everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.data != "" {
				cfg.DataDir = g.data
			}
			cfg.Out = g.stdout
			lc := telemetry.LogConfigFromEnv()
			if logLevel != "" {
				lc.Level = logLevel
			}
			if logFormat != "" {
				lc.Format = logFormat
			}
			log, err := telemetry.NewLogger(g.stderr, lc)
			if err != nil {
				return usageError{err}
			}
			// Notifier URLs may carry a token: OUTPOST_NOTIFY (space-separated NAME=URL) keeps
			// them out of argv.
			for _, spec := range append(strings.Fields(os.Getenv("OUTPOST_NOTIFY")), notify...) {
				n, err := correlation.ParseNotifier(spec)
				if err != nil {
					return usageError{err}
				}
				cfg.Notifiers = append(cfg.Notifiers, n)
			}
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			// SIGINT/SIGTERM drains within one deadline; a second signal exits at once.
			ctx, stop, err := shutdown.Notify(cmd.Context(), shutdown.Config{Deadline: shutdownTimeout, Logger: log})
			if err != nil {
				return usageError{err}
			}
			defer stop()
			// GC by a 48 MB headroom over the live heap, within GOGC 50–100: 50 % for a
			// large heap as before, less often for a small one (gcPolicy says why). GOGC,
			// when set, decides.
			if os.Getenv("GOGC") == "" {
				go hubGC.run(ctx, time.Second)
			}
			return hub.Run(ctx, cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "gateway listen address")
	f.StringVar(&cfg.NATSAddr, "nats", cfg.NATSAddr, "NATS client address bridges connect to")
	f.StringVar(&cfg.WSSAddr, "wss", "", "also accept bridges over WebSocket with TLS (wss://) on this address, for sites that allow only HTTPS egress")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "server certificate (PEM) for the NATS, WebSocket and HTTPS ports; default: the hub makes its own CA in <data>/tls/ when it listens off loopback")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "key of --tls-cert (PEM)")
	f.StringVar(&cfg.TLSClientCA, "tls-client-ca", "", "require bridges to present a client certificate signed by this CA (mTLS) on the NATS and WebSocket ports")
	f.StringArrayVar(&cfg.TLSSANs, "tls-san", nil, "extra DNS name or IP address for the hub's own certificate (repeatable)")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", shutdownTimeout, "on SIGINT/SIGTERM, drain for at most this long, then exit (a second signal exits at once)")
	f.BoolVar(&cfg.NoLocalBridge, "no-local-bridge", false, "do not run the in-process bridge for site \"local\"")
	f.BoolVar(&cfg.Lab, "lab", false, "run the simulated lab network with site \"lab\" and discover it (the demo)")
	f.StringVar(&cfg.LabRange, "lab-range", cfg.LabRange, "CIDR of the lab (inside 127.0.0.0/8)")
	f.IntVar(&cfg.LabHosts, "lab-hosts", cfg.LabHosts, "addresses in the lab")
	f.Int64Var(&cfg.LabSeed, "lab-seed", cfg.LabSeed, "seed of the lab")
	f.StringVar(&cfg.MappingPatterns, "mapping-patterns", "", "directory of Service Mapping pattern files (*.yaml) adding to or replacing the built-in ones")
	f.StringVar(&cfg.CMDB, "cmdb", "", "CMDB store: sqlite://PATH (default <data>/cmdb.db) or postgres://user@host/db")
	f.StringVar(&cfg.CorrelationRules, "correlation-rules", "", "directory of correlation rule files (*.yaml: event_rules, grouping, correlate, inhibit, flapping, topology, remediate), checked at start with file:line")
	f.StringArrayVar(&notify, "notify", nil, "send alert group notifications to NAME=URL: https://… (webhook) or smtp://host:port?from=ADDR&to=ADDR (repeatable; env OUTPOST_NOTIFY, space-separated, for URLs with a token)")
	f.DurationVar(&cfg.DiscoveryRetention, "discovery-retention", cfg.DiscoveryRetention, "keep finished discovery runs (record and hosts) this long after they end, then prune them (at least 1h)")
	f.BoolVar(&cfg.DiscoveryStandby, "discovery-standby", false, "discovery replicas active/standby: one advances every run, the others wait for its lease (default: every replica active, each run owned by one of them)")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (env OUTPOST_LOG_LEVEL)")
	f.StringVar(&logFormat, "log-format", "", "auto, text or json (env OUTPOST_LOG_FORMAT)")
	return cmd
}
