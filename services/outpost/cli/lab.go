package cli

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/libs/telemetry"
)

func newLab(g *globals) *cobra.Command {
	cfg := lab.DefaultConfig()
	var manifest string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run the simulated lab network on loopback (127.77.0.0/16) until interrupted",
		Long: `Run the lab: Linux hosts answering SSH, switches and routers answering SNMP, web servers
with certificates, an LDAP directory, Windows servers, printers and dead addresses, on loopback
addresses only, deterministic from --seed. The manifest (JSON) is the truth tests compare with.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := telemetry.NewLogger(g.stderr, telemetry.LogConfigFromEnv())
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = log
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			l, err := lab.Start(ctx, cfg)
			if err != nil {
				return err
			}
			defer l.Close()
			m := l.Manifest()
			if manifest != "" {
				if err := l.WriteManifest(manifest); err != nil {
					return err
				}
			}
			alive := 0
			for _, h := range m.Hosts {
				if h.Class != "" {
					alive++
				}
			}
			fmt.Fprintf(g.stdout, "lab up on %s: %d addresses, %d alive, seed %d", cfg.Range, len(m.Hosts), alive, cfg.Seed)
			if manifest != "" {
				fmt.Fprintf(g.stdout, ", manifest %s", manifest)
			}
			fmt.Fprintln(g.stdout, " — Ctrl-C stops it")
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Range, "range", cfg.Range, "CIDR inside 127.0.0.0/8 to run the lab on")
	f.IntVar(&cfg.Hosts, "hosts", cfg.Hosts, "number of simulated addresses")
	f.Int64Var(&cfg.Seed, "seed", cfg.Seed, "seed: the same seed gives the same lab")
	f.BoolVar(&cfg.Hostile, "hostile", false, "add hostile hosts (stall, wrong protocol, endless stream)")
	f.StringVar(&manifest, "manifest", "", "write the manifest (JSON) here")
	return cmd
}
