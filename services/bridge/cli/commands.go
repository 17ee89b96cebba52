package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-dev/outpost/services/bridge/service"
	"github.com/outpost-dev/outpost/services/bridge/status"
)

// statusMain prints the bridge's own status from its data dir, without the hub: exit 0
// when healthy, 1 when something needs a look, 2 on bad usage.
func statusMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("outpost-bridge status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", os.Getenv("OUTPOST_BRIDGE_DATA"), "the bridge's data directory (default: from --config)")
	config := fs.String("config", os.Getenv("OUTPOST_BRIDGE_CONFIG"), "the bridge's configuration file (default: the installed one when present)")
	asJSON := fs.Bool("json", false, "print the status file as JSON")
	live := fs.Bool("live", false, "only say whether the bridge runs (exit 1 when its status is stale or stopped), whatever the hub's reachability: a liveness check that a WAN cut does not fail")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	dir, err := dataDir(*data, *config)
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 2
	}
	st, err := status.Read(dir)
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	} else {
		_ = st.Render(stdout, time.Now())
	}
	if *live {
		if st.Phase == status.PhaseStopped || time.Since(st.Updated) > status.StaleAfter {
			return 1
		}
		return 0
	}
	if len(st.Health(time.Now())) > 0 {
		return 1
	}
	return 0
}

// dataDir finds the data dir: --data, else the configuration's, else the installed
// configuration's, else the default ./bridge-data.
func dataDir(data, config string) (string, error) {
	if data != "" {
		return data, nil
	}
	if config == "" {
		p := service.DefaultPaths(runtime.GOOS, os.Getenv("ProgramData"))
		if _, err := os.Stat(p.ConfigFile); err == nil {
			config = p.ConfigFile
		}
	}
	if config != "" {
		b, err := os.ReadFile(config)
		if err != nil {
			return "", err
		}
		var c struct {
			Data string `yaml:"data"`
		}
		if err := yaml.Unmarshal(b, &c); err != nil {
			return "", fmt.Errorf("%s: %w", config, err)
		}
		if c.Data != "" {
			return c.Data, nil
		}
	}
	return "./bridge-data", nil
}

// manager is the platform's service manager.
type manager interface {
	Install(service.InstallConfig) error
	Uninstall(purge bool) error
	Start() error
	Stop() error
	Status() error
}

// serviceMain is `outpost-bridge service install|uninstall|start|stop|status` (and `run`,
// which the Windows service manager starts).
func serviceMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: outpost-bridge service install|uninstall|start|stop|status [flags]")
		return 2
	}
	cmd, args := args[0], args[1:]
	if cmd == "run" {
		return serviceRun(args, stderr)
	}
	if err := service.CheckCommand(cmd); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 2
	}
	fs := flag.NewFlagSet("outpost-bridge service "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c service.InstallConfig
	var apps []string
	tokenFile := fs.String("token-file", "", "file holding the enrollment token (default: env OUTPOST_BRIDGE_TOKEN)")
	root := fs.String("root", "", "lay the files down under this directory instead of / (packaging, tests): no user, no systemctl")
	purge := fs.Bool("purge", false, "uninstall: also remove the configuration and the data dir (the bridge's identity and unsent results)")
	if cmd == "install" {
		fs.StringVar(&c.Hub, "hub", "", "hub URL: tls://host:4222 or wss://host:443")
		fs.StringVar(&c.Site, "site", "", "site this bridge serves")
		fs.StringVar(&c.Name, "name", "", "agent name (default: the host name)")
		fs.StringVar(&c.CAFile, "ca", "", "CA file to verify the hub (copied next to the configuration)")
		fs.Var(listFlag{&apps}, "apps", "serve only these applications, comma-separated (default: all)")
		fs.BoolVar(&c.RawScans, "raw-scans", false, "grant CAP_NET_RAW (raw-socket probes) on Linux; nothing else is ever granted")
		fs.BoolVar(&c.Force, "force", false, "replace an existing configuration")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	m := platformManager(*root, stdout)
	var err error
	switch cmd {
	case "install":
		c.Apps = splitList(strings.Join(apps, ","))
		c.Token = os.Getenv("OUTPOST_BRIDGE_TOKEN")
		if *tokenFile != "" {
			b, rerr := os.ReadFile(*tokenFile)
			if rerr != nil {
				fmt.Fprintln(stderr, "error: --token-file:", rerr)
				return 2
			}
			c.Token = strings.TrimSpace(string(b))
		}
		if verr := c.Validate(); verr != nil {
			fmt.Fprintln(stderr, "error: invalid configuration:\n ", strings.ReplaceAll(verr.Error(), "\n", "\n  "))
			return 2
		}
		err = m.Install(c)
	case "uninstall":
		err = m.Uninstall(*purge)
	case "start":
		err = m.Start()
	case "stop":
		err = m.Stop()
	case "status":
		err = m.Status()
		// and the bridge's own account, which the service manager does not know
		if dir, derr := dataDir("", ""); derr == nil {
			if st, serr := status.Read(dir); serr == nil {
				_ = st.Render(stdout, time.Now())
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}

// serviceRun runs the bridge as the service manager's child: the secrets file is loaded
// into the environment (systemd does it with EnvironmentFile; Windows cannot), and under the
// Windows service manager the run/stop requests drive a service.Runner.
func serviceRun(args []string, stderr io.Writer) int {
	var rest []string
	for i := 0; i < len(args); i++ {
		if args[i] == "--env-file" && i+1 < len(args) {
			b, err := os.ReadFile(args[i+1])
			if err != nil {
				fmt.Fprintln(stderr, "error: --env-file:", err)
				return 2
			}
			env, err := service.ParseEnvFile(string(b))
			if err != nil {
				fmt.Fprintf(stderr, "error: %s: %v\n", args[i+1], err)
				return 2
			}
			for k, v := range env {
				os.Setenv(k, v)
			}
			i++
			continue
		}
		rest = append(rest, args[i])
	}
	if !service.IsService() {
		return runMain(context.Background(), rest, stderr)
	}
	logTo := stderr
	if el, err := openEventLog(); err == nil {
		logTo = el
	}
	r := &service.Runner{StopTimeout: 60 * time.Second, Run: func(ctx context.Context) error {
		if code := runMain(ctx, rest, logTo); code != 0 {
			return fmt.Errorf("the bridge exited with status %d", code)
		}
		return nil
	}}
	if err := service.RunService(r); err != nil {
		fmt.Fprintln(logTo, "level=ERROR msg=\"service\" err=", err)
		return 1
	}
	return int(r.ExitCode())
}
