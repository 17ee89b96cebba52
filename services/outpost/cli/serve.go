package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-dev/outpost/libs/keyfile"
	"github.com/outpost-dev/outpost/libs/shutdown"
	"github.com/outpost-dev/outpost/libs/telemetry"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

func newServe(g *globals) *cobra.Command {
	var cfg hub.ServeConfig
	var logLevel, logFormat string
	shutdownTimeout := 30 * time.Second
	cmd := &cobra.Command{
		Use:   "serve SERVICE... | all",
		Short: "Run some hub services as replicas against an existing NATS server or cluster",
		Long: `Run the named hub services (` + strings.Join(hub.ServeNames(), ", ") + `, or all) in this
process against a NATS server or cluster that runs elsewhere (deployments/nats; scripts/cluster.sh
starts one on loopback). Start as many such processes as you like, on as many machines: replicas of
a service share its durable consumers, and its leases decide what only one may do at a time.

--nats-creds is the hub's credentials file made by "outpost hub-creds" (the NATS password and the
keys every replica shares); without it the secrets of --data are used (a process beside
"outpost up" on the same data dir). A gateway writes the admin API token to <data>/admin.token.
Streams and buckets get 3 replicas on a cluster and 1 on a single server unless --replicas says.

Every process serves /metrics (Prometheus text: its CPU and memory, which of its services run,
the lag of the durable consumers they share with the other replicas) and /healthz on --metrics;
a gateway among its services serves the same figures, with the hub's view of the bus, on its
own /metrics behind a viewer token. With --nats-creds, the release key that signs bridge builds
comes from the credentials file (every replica names the same one to bridges; "outpost
bridge-builds add --nats-creds FILE" signs with it); without, from <data>/release.key as
"outpost up" does.`,
		Example: `  outpost serve all --nats-url nats://10.0.0.1:4222,nats://10.0.0.2:4222,nats://10.0.0.3:4222 \
      --nats-creds /etc/outpost/hub.creds --nats-ca /etc/outpost/ca.pem --data /var/lib/outpost --http 0.0.0.0:8080
  outpost serve discovery --nats-url nats://127.0.0.1:4222 --nats-creds ./cluster/hub.creds --data ./disc2 --metrics 127.0.0.1:9464`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Services = args
			if g.data != "" {
				cfg.DataDir = g.data
			}
			if cfg.DataDir == "" {
				cfg.DataDir = "./data"
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
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			ctx, stop, err := shutdown.Notify(cmd.Context(), shutdown.Config{Deadline: shutdownTimeout, Logger: log})
			if err != nil {
				return usageError{err}
			}
			defer stop()
			return hub.Serve(ctx, cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NATSURL, "nats-url", os.Getenv("OUTPOST_NATS_URL"), "NATS servers, comma-separated: nats://host:4222[,nats://…] (env OUTPOST_NATS_URL)")
	f.StringVar(&cfg.CredsFile, "nats-creds", os.Getenv("OUTPOST_NATS_CREDS"), "the hub's credentials file from outpost hub-creds (env OUTPOST_NATS_CREDS)")
	f.StringVar(&cfg.NATSCA, "nats-ca", "", "CA (PEM) that signed the NATS servers' certificates (tls:// URLs or TLS-only servers)")
	f.StringVar(&cfg.NATSCert, "nats-cert", "", "client certificate (PEM) for NATS servers that require mutual TLS")
	f.StringVar(&cfg.NATSKey, "nats-key", "", "key of --nats-cert (PEM)")
	f.StringVar(&cfg.HTTPAddr, "http", "127.0.0.1:8080", "gateway listen address (when gateway is among the services)")
	f.StringVar(&cfg.CMDB, "cmdb", "", "CMDB store: sqlite://PATH (default <data>/cmdb.db) or postgres://user@host/db; replicas of cmdb on several machines need PostgreSQL")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "gateway HTTPS certificate (PEM)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "key of --tls-cert (PEM)")
	f.StringVar(&cfg.MetricsAddr, "metrics", hub.DefaultMetricsAddr, "operations port of this process (/metrics in Prometheus text, /healthz), no auth: keep it on loopback or a private network; "+
		"the default picks a free loopback port, logged and written to <data>/"+hub.MetricsAddrFile+"; off disables it")
	f.BoolVar(&cfg.DiscoveryStandby, "discovery-standby", false, "discovery replicas active/standby: one advances every run, the others wait for its lease (default: every replica active, each run owned by one of them)")
	f.IntVar(&cfg.Replicas, "replicas", 0, "replicas of the streams and buckets the services create (0: 3 on a cluster, 1 on a single server)")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", shutdownTimeout, "on SIGINT/SIGTERM, drain for at most this long, then exit")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (env OUTPOST_LOG_LEVEL)")
	f.StringVar(&logFormat, "log-format", "", "auto, text or json (env OUTPOST_LOG_FORMAT)")
	return cmd
}

func newHubCreds(g *globals) *cobra.Command {
	var envFile string
	cmd := &cobra.Command{
		Use:   "hub-creds FILE",
		Short: "Make the credentials file of a new hub run as outpost serve processes on a NATS cluster",
		Long: `Make FILE (mode 0600, never overwritten): the hub's NATS password and the keys every
"outpost serve" replica of the hub shares (auth callout issuer, credential sealing key, API token
signing key, target credential key, the bootstrap admin API token). With --env, also write the
variables the NATS servers' accounts.conf needs (HUB_PASSWORD, SYS_PASSWORD, CALLOUT_ISSUER) as a
0600 shell file to source before starting nats-server. Secrets are never printed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sec, err := hub.NewSecrets()
			if err != nil {
				return err
			}
			if err := hub.WriteCredsFile(args[0], sec); err != nil {
				return err
			}
			if envFile != "" {
				pub, _ := sec.Callout.PublicKey()
				var b strings.Builder
				b.WriteString("# NATS server variables of accounts.conf (outpost hub-creds); keep 0600\n")
				for _, kv := range [][2]string{{"HUB_PASSWORD", sec.HubPassword}, {"SYS_PASSWORD", sec.SysPassword}, {"CALLOUT_ISSUER", pub}} {
					// nats-server reads a variable's value as config syntax: quoted, it
					// stays a string whatever its characters.
					fmt.Fprintf(&b, "export %s='\"%s\"'\n", kv[0], kv[1])
				}
				// Whole or not at all, like the credentials file; on failure neither stays.
				if err := keyfile.Create(envFile, []byte(b.String())); err != nil {
					return errors.Join(fmt.Errorf("--env %s: %w", envFile, err), os.Remove(args[0]))
				}
			}
			fmt.Fprintf(g.stdout, "wrote %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&envFile, "env", "", "also write the NATS servers' variables to this file (0600)")
	return cmd
}
