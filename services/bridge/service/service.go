// Package service installs and runs outpost-bridge as the platform's service: a hardened
// systemd unit on Linux, a Windows service (x/sys/windows/svc) logging to the Event Log. What
// does not depend on the platform — where things live, the unit's text, the install plan,
// the run/stop state machine — is here and unit-tested on every platform.
package service

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Name is the service's name on every platform (systemd unit outpost-bridge.service, the
// Windows service OutpostBridge's key), and the Linux user it runs as.
const (
	Name        = "outpost-bridge"
	WindowsName = "OutpostBridge"
	DisplayName = "Outpost Bridge"
	Description = "Outpost site agent: dials out to the hub, runs probes on the site network, never listens for the hub"
)

// Paths are where a platform keeps the bridge's files.
type Paths struct {
	// ConfigDir holds the configuration file, the secrets file and the hub's CA.
	ConfigDir string
	// ConfigFile is the YAML configuration (bridge.Config).
	ConfigFile string
	// SecretsFile holds OUTPOST_BRIDGE_TOKEN (and the webhook key): 0600, read by the
	// service manager, never passed on a command line.
	SecretsFile string
	// DataDir holds the identity keys, the outbox, the status file and upgrade builds.
	DataDir string
	// Bin is where the binary is installed.
	Bin string
	// Unit is the systemd unit file (Linux only).
	Unit string
}

// DefaultPaths are the platform's conventional places: /etc/outpost-bridge,
// /var/lib/outpost-bridge and /usr/bin on Linux (the package's layout);
// %ProgramData%\Outpost\Bridge on Windows. programData is %ProgramData% (Windows only;
// empty: C:\ProgramData).
func DefaultPaths(goos, programData string) Paths {
	if goos == "windows" {
		if programData == "" {
			programData = `C:\ProgramData`
		}
		base := strings.TrimRight(programData, `\`) + `\Outpost\Bridge`
		return Paths{ConfigDir: base, ConfigFile: base + `\bridge.yaml`, SecretsFile: base + `\bridge.env`,
			DataDir: base + `\data`, Bin: base + `\outpost-bridge.exe`}
	}
	return Paths{ConfigDir: "/etc/outpost-bridge", ConfigFile: "/etc/outpost-bridge/bridge.yaml",
		SecretsFile: "/etc/outpost-bridge/bridge.env", DataDir: "/var/lib/outpost-bridge", Bin: "/usr/bin/outpost-bridge",
		Unit: "/lib/systemd/system/outpost-bridge.service"}
}

// Under returns p with every path under root (a package's staging tree, a test's temp root).
func (p Paths) Under(root string) Paths {
	if root == "" {
		return p
	}
	j := func(s string) string {
		if s == "" {
			return ""
		}
		return filepath.Join(root, filepath.FromSlash(s))
	}
	return Paths{ConfigDir: j(p.ConfigDir), ConfigFile: j(p.ConfigFile), SecretsFile: j(p.SecretsFile), DataDir: j(p.DataDir),
		Bin: j(p.Bin), Unit: j(p.Unit)}
}

// UnitConfig is what the systemd unit says.
type UnitConfig struct {
	Bin, ConfigFile, SecretsFile, DataDir string
	// User runs the bridge (created by install as a system user without a shell or home).
	User string
	// RawScans grants CAP_NET_RAW (ICMP and raw-socket probes) and nothing else.
	RawScans bool
}

// Validate reports every problem at once.
func (u UnitConfig) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"binary", u.Bin}, {"config file", u.ConfigFile}, {"secrets file", u.SecretsFile}, {"data dir", u.DataDir}} {
		if !path.IsAbs(f.v) {
			errs = append(errs, fmt.Errorf("unit: %s %q must be an absolute path", f.name, f.v))
		}
		if strings.ContainsAny(f.v, " \t\n\"'\\%$") {
			errs = append(errs, fmt.Errorf("unit: %s %q: use a path without spaces, quotes, %%, $ or backslashes", f.name, f.v))
		}
	}
	if u.User == "" || strings.ContainsAny(u.User, " \t\n:/") {
		errs = append(errs, fmt.Errorf("unit: user %q: want a plain user name", u.User))
	}
	return errors.Join(errs...)
}

// Unit renders the systemd unit. The bridge only dials out and writes its data dir, so the
// unit takes everything else away: its own unprivileged user, a read-only system
// (ProtectSystem=strict) but for the data dir, no new privileges, no capabilities (CAP_NET_RAW
// alone when raw scans are on), IPv4/IPv6/Unix sockets only.
func Unit(u UnitConfig) (string, error) {
	if err := u.Validate(); err != nil {
		return "", err
	}
	caps := ""
	if u.RawScans {
		caps = "CAP_NET_RAW"
	}
	var b strings.Builder
	w := func(lines ...string) {
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
	w("# Installed by `outpost-bridge service install` (or the outpost-bridge package).",
		"# Local changes: `systemctl edit outpost-bridge`, not this file.",
		"[Unit]",
		"Description="+Description,
		"Documentation=https://outpost.dev/docs/bridge-install",
		"Wants=network-online.target",
		"After=network-online.target",
		"",
		"[Service]",
		"Type=simple",
		"User="+u.User,
		"Group="+u.User,
		"ExecStart="+u.Bin+" --config "+u.ConfigFile,
		"EnvironmentFile=-"+u.SecretsFile,
		// The bridge exits 0 after a drain (an operator's `agents drain`): not restarted then.
		"Restart=on-failure",
		"RestartSec=5s",
		// 45 s drain (--shutdown-timeout) plus the outbox flush.
		"TimeoutStopSec=60s",
		"UMask=0077",
		"LimitNOFILE=65536",
		"ReadWritePaths="+u.DataDir,
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"ProtectHome=yes",
		"PrivateTmp=yes",
		"PrivateDevices=yes",
		"ProtectKernelTunables=yes",
		"ProtectKernelModules=yes",
		"ProtectKernelLogs=yes",
		"ProtectControlGroups=yes",
		"ProtectClock=yes",
		"ProtectHostname=yes",
		"RestrictSUIDSGID=yes",
		"RestrictRealtime=yes",
		"RestrictNamespaces=yes",
		"LockPersonality=yes",
		"MemoryDenyWriteExecute=yes",
		"SystemCallArchitectures=native",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
		"CapabilityBoundingSet="+caps,
		"AmbientCapabilities="+caps,
		"",
		"[Install]",
		"WantedBy=multi-user.target")
	return b.String(), nil
}

// Commands of `outpost-bridge service`.
var Commands = []string{"install", "uninstall", "start", "stop", "status"}

// CheckCommand refuses anything else, saying what is accepted.
func CheckCommand(cmd string) error {
	if !slices.Contains(Commands, cmd) {
		return fmt.Errorf("service %q: want one of %s", cmd, strings.Join(Commands, ", "))
	}
	return nil
}

// WindowsArgs are the arguments the Windows service starts the bridge with.
func WindowsArgs(p Paths) []string {
	return []string{"service", "run", "--config", p.ConfigFile, "--env-file", p.SecretsFile}
}

// LogLevel reads the level of a slog line (text or JSON): ERROR, WARN, INFO or DEBUG.
func LogLevel(line string) string {
	for _, l := range []string{"ERROR", "WARN", "DEBUG"} {
		if strings.Contains(line, "level="+l) || strings.Contains(line, `"level":"`+l+`"`) {
			return l
		}
	}
	return "INFO"
}

// ParseEnvFile reads KEY=VALUE lines (blank lines and # comments skipped): the secrets file,
// which the Windows service loads itself (systemd reads it through EnvironmentFile).
func ParseEnvFile(data string) (map[string]string, error) {
	out := map[string]string{}
	var errs []error
	for i, line := range strings.Split(data, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) == "" {
			errs = append(errs, fmt.Errorf("line %d: want KEY=VALUE", i+1))
			continue
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, errors.Join(errs...)
}
