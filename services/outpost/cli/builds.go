package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/release"
	"github.com/outpost-dev/outpost/services/agents"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

// newBridgeBuilds: `outpost bridge-builds add` runs on the hub's host. Signing needs the
// release key, which never leaves the hub's data dir (no API carries it, nor the build: a
// 35 MB binary is put straight into the object store over the hub's own NATS connection).
func newBridgeBuilds(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "bridge-builds", Short: "Store signed outpost-bridge builds the hub serves to bridges for self-upgrade (on the hub's host)"}
	var ver, goos, goarch, natsURL, ca, creds string
	add := &cobra.Command{
		Use:   "add FILE --version V [--os linux --arch amd64] [--data DIR]",
		Short: "Sign FILE with the hub's release key (<data>/release.key, made on first use) and store it; pin it with `outpost site pin-version`",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b := release.Build{OS: goos, Arch: goarch, Version: ver}
			if err := b.Validate(); err != nil {
				return usageError{err}
			}
			data := g.data
			if data == "" {
				data = hub.DefaultConfig().DataDir
			}
			bin, err := os.ReadFile(args[0])
			if err != nil {
				return usageError{err}
			}
			var key *release.Key
			var auth nats.Option
			if creds != "" {
				// A hub run as outpost serve replicas: its release key and password are in
				// the credentials file every replica reads.
				sec, err := hub.ReadCredsFile(creds)
				if err != nil {
					return err
				}
				if sec.Release == nil {
					return fmt.Errorf("%s has no release_seed (made by an older outpost hub-creds): its hub names no release key to bridges, so builds cannot be signed for them", creds)
				}
				key, auth = sec.Release, sec.NATSAuth()
			} else {
				if key, err = release.LoadOrCreateKey(filepath.Join(data, release.KeyFile)); err != nil {
					return err
				}
				if auth, err = hub.ServiceAuth(data); err != nil {
					return fmt.Errorf("the hub's service password (%s): %w; run this on the hub's host with --data <hub data dir>, or give --nats-creds", data, err)
				}
			}
			if ca == "" && strings.HasPrefix(natsURL, "tls://") {
				if p := filepath.Join(data, "tls", "ca.pem"); fileExists(p) {
					ca = p
				}
			}
			nc, err := bus.Connect(bus.ConnectConfig{URL: natsURL, Name: "outpost bridge-builds", CAFile: ca, Options: []nats.Option{auth}})
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			_, digest, err := agents.StoreBuild(ctx, js, key, b, bin)
			if err != nil {
				return fmt.Errorf("store %s: %w", b, err)
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(map[string]any{"os": b.OS, "arch": b.Arch, "version": b.Version, "sha256": digest,
					"size": len(bin), "release_key": key.Public()})
			}
			fmt.Fprintf(g.stdout, "stored bridge build %s: %d bytes, sha256 %s, signed by release key %s\n", b, len(bin), digest, key.Public())
			return nil
		},
	}
	f := add.Flags()
	f.StringVar(&ver, "version", "", "the build's version (what its `outpost-bridge --version` says), e.g. v1.2.3")
	f.StringVar(&goos, "os", runtime.GOOS, "the build's GOOS")
	f.StringVar(&goarch, "arch", runtime.GOARCH, "the build's GOARCH")
	f.StringVar(&natsURL, "nats", "nats://"+hub.DefaultConfig().NATSAddr, "the hub's NATS URL (tls:// when it serves TLS)")
	f.StringVar(&ca, "ca", "", "CA of the hub's certificate (default <data>/tls/ca.pem for tls://)")
	f.StringVar(&creds, "nats-creds", "", "a hub run as outpost serve replicas: its credentials file (outpost hub-creds), whose release key signs and whose password connects")
	_ = add.MarkFlagRequired("version")
	cmd.AddCommand(add)
	return cmd
}

// newSitePin: `outpost site pin-version SITE V` (through the gateway, admin).
func newSitePin(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "pin-version SITE VERSION",
		Short: "Pin the bridge version of a site: its bridges behind it upgrade themselves (signed build from `outpost bridge-builds add`); \"\" unpins",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := g.client()
			var out agentsapi.Site
			if err := c.do(cmd.Context(), "POST", "/api/v1/sites/"+args[0]+"/pin-version", agentsapi.PinVersionRequest{Site: args[0], Version: args[1]}, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			if out.PinnedVersion == "" {
				fmt.Fprintf(g.stdout, "site %s: no pinned bridge version\n", out.Name)
				return nil
			}
			fmt.Fprintf(g.stdout, "site %s: bridges upgrade to %s (they learn it within 30 s; `outpost agents ls` shows their version and upgrade)\n", out.Name, out.PinnedVersion)
			return nil
		},
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
