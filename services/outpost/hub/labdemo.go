package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/libs/version"
	"github.com/outpost-dev/outpost/services/agents"
	"github.com/outpost-dev/outpost/services/bridge"
	"github.com/outpost-dev/outpost/services/bridge/probe/kinds"
)

// LabSite is the site of the one-command demo.
const LabSite = "lab"

// runLabDemo is `outpost up --lab`: the simulated network, site "lab" served by an in-process
// bridge, the lab's credentials, and a discovery run whose progress it prints — so a newcomer
// sees the lab in the CMDB within a minute.
func runLabDemo(ctx context.Context, cfg Config, d Deps) error {
	out := cfg.Out
	lc := lab.DefaultConfig()
	lc.Range, lc.Hosts, lc.Seed, lc.Logger = cfg.LabRange, cfg.LabHosts, cfg.LabSeed, d.Logger
	l, err := lab.Start(ctx, lc)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer l.Close()
	m := l.Manifest()
	manifest := filepath.Join(d.DataDir, "lab.json")
	if err := l.WriteManifest(manifest); err != nil {
		return err
	}
	fmt.Fprintf(out, "lab: %d simulated addresses on %s (seed %d), manifest %s\n", len(m.Hosts), lc.Range, lc.Seed, manifest)

	if err := d.ready.wait(ctx, "agents"); err != nil {
		return nil
	}
	dir := filepath.Join(d.DataDir, "lab-bridge")
	token := ""
	if _, err := os.Stat(filepath.Join(dir, "identity.nk")); errors.Is(err, fs.ErrNotExist) {
		var reply agents.SiteAddReply
		if err := retry(ctx, func() error {
			return bus.Request(ctx, d.NC, "agents", "site_add", agents.SiteAddRequest{Name: LabSite, Ranges: []string{lc.Range}, AutoApprove: true}, &reply)
		}); err != nil {
			return fmt.Errorf("create site %s: %w", LabSite, err)
		}
		token = reply.Token
	}
	if err := addLabCredentials(ctx, d, m); err != nil {
		return err
	}
	bc := bridge.DefaultConfig()
	bc.Hub = inProcessHubURL(d.Server)
	bc.Site, bc.Name, bc.Token, bc.DataDir, bc.Version = LabSite, "lab-bridge", token, dir, version.Version
	bc.Allow = []string{lc.Range}
	ready := make(chan struct{})
	bridgeErr := make(chan error, 1)
	go func() {
		bridgeErr <- bridge.Run(ctx, bc, bridge.Deps{Logger: d.Logger, Kinds: kinds.All(), Ready: func() { close(ready) },
			ConnectOptions: []nats.Option{nats.InProcessServer(d.Server.Inner())}})
	}()
	select {
	case <-ready:
	case err := <-bridgeErr:
		return fmt.Errorf("lab bridge: %w", err)
	case <-ctx.Done():
		return nil
	}
	var started struct{ Run string }
	if err := retry(ctx, func() error {
		return bus.Request(ctx, d.NC, "discovery", "start", map[string]any{"site": LabSite}, &started)
	}); err != nil {
		return fmt.Errorf("start the lab discovery: %w", err)
	}
	fmt.Fprintf(out, "discovery run %s started on site %s\n", started.Run, LabSite)
	go followRun(ctx, d, started.Run, cfg.HTTPAddr, out)
	select {
	case err := <-bridgeErr:
		return err
	case <-ctx.Done():
		return <-bridgeErr
	}
}

// addLabCredentials registers every distinct credential of the manifest (idempotent).
func addLabCredentials(ctx context.Context, d Deps, m lab.Manifest) error {
	for _, lc := range m.StoreCredentials("lab") {
		c := map[string]any{"name": lc.Name, "type": lc.Type, "site": LabSite, "username": lc.Username, "secret": lc.Secret, "fields": lc.Fields}
		err := retry(ctx, func() error {
			err := bus.Request(ctx, d.NC, "discovery", "credentials_add", c, nil)
			var se *bus.ServiceError
			if errors.As(err, &se) && se.Code == 409 {
				return nil // already there from a previous start
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("add lab credential %s: %w", c["name"], err)
		}
	}
	return nil
}

// followRun prints the run's progress, then where to look.
func followRun(ctx context.Context, d Deps, run, httpAddr string, out io.Writer) {
	last := ""
	for ctx.Err() == nil {
		var r struct {
			State    string         `json:"state"`
			Counters map[string]int `json:"counters"`
		}
		if err := bus.Request(ctx, d.NC, "discovery", "run_get", map[string]string{"id": run}, &r); err == nil {
			c := r.Counters
			line := fmt.Sprintf("discovery %s: %s, scanned %d/%d, alive %d, classified %d, CIs created %d, updated %d, unchanged %d",
				run, r.State, c["scanned"], c["addresses"], c["alive"], c["classified"], c["cis_created"], c["cis_updated"], c["cis_unchanged"])
			if line != last {
				fmt.Fprintln(out, line)
				last = line
			}
			if r.State == "completed" || r.State == "failed" || r.State == "canceled" {
				// the CLI finds this hub by itself when it runs with the defaults of `make run`
				var flags string
				if filepath.Clean(d.DataDir) != "data" {
					flags += " --data " + d.DataDir
				}
				if httpAddr != DefaultConfig().HTTPAddr {
					flags += " --server http://" + httpAddr
				}
				fmt.Fprintf(out, "\nThe lab is in the CMDB. Try:\n  bin/outpost%s ci ls --class linux_server\n  bin/outpost%[1]s runs show %s\n  curl -H \"Authorization: Bearer $(cat %s)\" http://%s/api/v1/cis?class=server\n  or open http://%[4]s/ in a browser and sign in with the token in %[3]s\n",
					flags, run, filepath.Join(d.DataDir, AdminTokenFile), httpAddr)
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}
