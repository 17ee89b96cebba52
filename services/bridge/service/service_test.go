package service

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestDefaultPaths(t *testing.T) {
	cases := []struct {
		goos, programData string
		want              Paths
	}{
		{"linux", "", Paths{ConfigDir: "/etc/outpost-bridge", ConfigFile: "/etc/outpost-bridge/bridge.yaml",
			SecretsFile: "/etc/outpost-bridge/bridge.env", DataDir: "/var/lib/outpost-bridge", Bin: "/usr/bin/outpost-bridge",
			Unit: "/lib/systemd/system/outpost-bridge.service"}},
		{"windows", `D:\PD\`, Paths{ConfigDir: `D:\PD\Outpost\Bridge`, ConfigFile: `D:\PD\Outpost\Bridge\bridge.yaml`,
			SecretsFile: `D:\PD\Outpost\Bridge\bridge.env`, DataDir: `D:\PD\Outpost\Bridge\data`, Bin: `D:\PD\Outpost\Bridge\outpost-bridge.exe`}},
		{"windows", "", Paths{ConfigDir: `C:\ProgramData\Outpost\Bridge`, ConfigFile: `C:\ProgramData\Outpost\Bridge\bridge.yaml`,
			SecretsFile: `C:\ProgramData\Outpost\Bridge\bridge.env`, DataDir: `C:\ProgramData\Outpost\Bridge\data`, Bin: `C:\ProgramData\Outpost\Bridge\outpost-bridge.exe`}},
	}
	for _, c := range cases {
		if got := DefaultPaths(c.goos, c.programData); got != c.want {
			t.Errorf("%s %q:\n got %+v\nwant %+v", c.goos, c.programData, got, c.want)
		}
	}
	if got := DefaultPaths("linux", "").Under("/stage").DataDir; got != filepath.Join("/stage", "var/lib/outpost-bridge") {
		t.Errorf("Under: %s", got)
	}
}

func unitFor(t *testing.T, raw bool) string {
	t.Helper()
	p := DefaultPaths("linux", "")
	u, err := Unit(UnitConfig{Bin: p.Bin, ConfigFile: p.ConfigFile, SecretsFile: p.SecretsFile, DataDir: p.DataDir, User: Name, RawScans: raw})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestUnitHardening(t *testing.T) {
	cases := []struct {
		raw       bool
		want, not []string
	}{
		{false, []string{"User=outpost-bridge\n", "NoNewPrivileges=yes\n", "ProtectSystem=strict\n", "ReadWritePaths=/var/lib/outpost-bridge\n",
			"CapabilityBoundingSet=\n", "AmbientCapabilities=\n", "EnvironmentFile=-/etc/outpost-bridge/bridge.env\n",
			"ExecStart=/usr/bin/outpost-bridge --config /etc/outpost-bridge/bridge.yaml\n", "PrivateTmp=yes\n", "ProtectHome=yes\n"},
			[]string{"CAP_NET_RAW", "CAP_NET_ADMIN", "token", "TOKEN"}},
		{true, []string{"CapabilityBoundingSet=CAP_NET_RAW\n", "AmbientCapabilities=CAP_NET_RAW\n", "NoNewPrivileges=yes\n"},
			[]string{"CAP_NET_ADMIN", "CAP_SYS_ADMIN"}},
	}
	for _, c := range cases {
		u := unitFor(t, c.raw)
		for _, w := range c.want {
			if !strings.Contains(u, w) {
				t.Errorf("raw=%v: unit lacks %q", c.raw, w)
			}
		}
		for _, n := range c.not {
			if strings.Contains(u, n) {
				t.Errorf("raw=%v: unit has %q", c.raw, n)
			}
		}
	}
}

func TestUnitRefusesBadInput(t *testing.T) {
	_, err := Unit(UnitConfig{Bin: "outpost-bridge", ConfigFile: "/etc/x y.yaml", SecretsFile: "/etc/s", DataDir: "/var/lib/$x", User: "a b"})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{`binary "outpost-bridge" must be an absolute path`, `config file "/etc/x y.yaml"`, `data dir "/var/lib/$x"`, `user "a b"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
}

// systemd itself accepts the unit (where systemd-analyze exists; CI installs systemd).
func TestUnitVerifiesWithSystemd(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "outpost-bridge")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, raw := range []bool{false, true} {
		u, err := Unit(UnitConfig{Bin: bin, ConfigFile: filepath.Join(dir, "bridge.yaml"), SecretsFile: filepath.Join(dir, "bridge.env"),
			DataDir: dir, User: Name, RawScans: raw})
		if err != nil {
			t.Fatal(err)
		}
		unit := filepath.Join(dir, "outpost-bridge.service")
		if err := os.WriteFile(unit, []byte(u), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sa, "verify", unit).CombinedOutput()
		// verify also reports the host's own units' problems; only lines about ours count
		var ours []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "outpost-bridge.service") {
				ours = append(ours, l)
			}
		}
		if len(ours) > 0 || (err != nil && len(strings.TrimSpace(string(out))) == 0) {
			t.Fatalf("raw=%v: systemd-analyze verify: %v\n%s", raw, err, out)
		}
	}
}

func TestWriteFiles(t *testing.T) {
	root := t.TempDir()
	ca := filepath.Join(root, "hub-ca.pem")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	installed := DefaultPaths("linux", "")
	c := InstallConfig{Paths: installed.Under(root), Hub: "tls://hub.example:4222", Site: "dc1", Name: "br-1",
		Token: "s3cret-token", CAFile: ca, Apps: []string{"discovery", "import"}}
	if err := WriteFiles(c, installed.DataDir, "/etc/outpost-bridge/ca.pem"); err != nil {
		t.Fatal(err)
	}
	p := c.Paths
	modes := map[string]os.FileMode{p.ConfigFile: 0o640, p.SecretsFile: 0o600, p.DataDir: 0o700 | os.ModeDir,
		filepath.Join(p.ConfigDir, "ca.pem"): 0o644}
	for f, want := range modes {
		st, err := os.Stat(f)
		if err != nil || st.Mode() != want {
			t.Errorf("%s: mode %v, want %v (%v)", f, st.Mode(), want, err)
		}
	}
	cfg, _ := os.ReadFile(p.ConfigFile)
	if strings.Contains(string(cfg), "s3cret") {
		t.Fatal("the token is in the configuration file")
	}
	var y map[string]any
	if err := yaml.Unmarshal(cfg, &y); err != nil || y["data"] != "/var/lib/outpost-bridge" || y["ca"] != "/etc/outpost-bridge/ca.pem" || y["site"] != "dc1" {
		t.Fatalf("config: %v %v\n%s", y, err, cfg)
	}
	env, _ := os.ReadFile(p.SecretsFile)
	if kv, err := ParseEnvFile(string(env)); err != nil || kv["OUTPOST_BRIDGE_TOKEN"] != "s3cret-token" {
		t.Fatalf("secrets: %v %v", kv, err)
	}
	// a second install keeps the administrator's file unless --force
	if err := WriteFiles(c, installed.DataDir, ""); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second install: %v", err)
	}
	c.Force = true
	if err := WriteFiles(c, installed.DataDir, ""); err != nil {
		t.Fatal(err)
	}
	// and a config without hub, site or token is refused whole
	err := WriteFiles(InstallConfig{Paths: c.Paths}, "", "")
	for _, w := range []string{"--hub is required", "--site is required", "OUTPOST_BRIDGE_TOKEN or --token-file"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("empty config: %v lacks %q", err, w)
		}
	}
}

// Systemd with a staging root lays down the unit and files an installed system gets.
func TestSystemdInstallIntoRoot(t *testing.T) {
	root := t.TempDir()
	var out strings.Builder
	s := Systemd{Root: root, Out: &out}
	if err := s.Install(InstallConfig{Hub: "tls://hub:4222", Site: "dc1", Token: "t", RawScans: true}); err != nil {
		t.Fatal(err)
	}
	p := DefaultPaths("linux", "").Under(root)
	u, err := os.ReadFile(p.Unit)
	if err != nil || !strings.Contains(string(u), "ExecStart=/usr/bin/outpost-bridge --config /etc/outpost-bridge/bridge.yaml") ||
		!strings.Contains(string(u), "AmbientCapabilities=CAP_NET_RAW") {
		t.Fatalf("unit: %v\n%s", err, u)
	}
	if err := s.Uninstall(false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.Unit); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unit still there: %v", err)
	}
	if _, err := os.Stat(p.SecretsFile); err != nil {
		t.Fatalf("uninstall without --purge removed the configuration: %v", err)
	}
	if err := s.Uninstall(true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("purge kept the data dir: %v", err)
	}
}

func TestParseEnvFileAndLogLevel(t *testing.T) {
	kv, err := ParseEnvFile("# c\n\nA=1\n B = x=y \n")
	if err != nil || kv["A"] != "1" || kv["B"] != "x=y" {
		t.Fatalf("%v %v", kv, err)
	}
	if _, err := ParseEnvFile("A=1\nnope\n"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad line: %v", err)
	}
	for line, want := range map[string]string{`time=x level=ERROR msg=y`: "ERROR", `{"level":"WARN"}`: "WARN", `level=INFO msg=z`: "INFO", `plain`: "INFO"} {
		if got := LogLevel(line); got != want {
			t.Errorf("%q: %s, want %s", line, got, want)
		}
	}
	for _, c := range Commands {
		if CheckCommand(c) != nil {
			t.Errorf("%s refused", c)
		}
	}
	if err := CheckCommand("restart"); err == nil || !strings.Contains(err.Error(), "install, uninstall, start, stop, status") {
		t.Errorf("restart: %v", err)
	}
}

// The run/stop state machine a Windows service handler drives.
func TestRunner(t *testing.T) {
	t.Run("stop drains", func(t *testing.T) {
		stopped := make(chan struct{}, 2)
		r := &Runner{Run: func(ctx context.Context) error { <-ctx.Done(); stopped <- struct{}{}; return ctx.Err() }}
		if r.State() != Stopped || r.Done() != nil {
			t.Fatal("not stopped at first")
		}
		if err := r.Start(); err != nil || r.State() != Running {
			t.Fatalf("start: %v %v", err, r.State())
		}
		if err := r.Start(); !errors.Is(err, ErrNotStopped) {
			t.Fatalf("second start: %v", err)
		}
		if !r.Stop() {
			t.Fatal("did not stop")
		}
		<-stopped
		if r.State() != Stopped || r.ExitCode() != 0 {
			t.Fatalf("after stop: %v %d", r.State(), r.ExitCode())
		}
		// and it can start again (the service manager's restart)
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		r.Stop()
	})
	t.Run("exits by itself", func(t *testing.T) {
		r := &Runner{Run: func(context.Context) error { return errors.New("boom") }}
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		<-r.Done()
		if r.State() != Stopped || r.ExitCode() != 1 || r.Err().Error() != "boom" {
			t.Fatalf("%v %d %v", r.State(), r.ExitCode(), r.Err())
		}
		if !r.Stop() {
			t.Fatal("stop of a stopped runner")
		}
	})
	t.Run("stop timeout", func(t *testing.T) {
		release := make(chan struct{})
		r := &Runner{StopTimeout: 50 * time.Millisecond, Run: func(context.Context) error { <-release; return nil }}
		_ = r.Start()
		if r.Stop() {
			t.Fatal("a bridge that ignores its context stopped in time")
		}
		if r.State() != StopPending {
			t.Fatalf("state %v", r.State())
		}
		close(release)
		<-r.Done()
		if r.State() != Stopped || r.ExitCode() != 0 {
			t.Fatalf("%v %d", r.State(), r.ExitCode())
		}
	})
}

// The bridge builds for Windows (service wrapper, Event Log) from any platform.
func TestWindowsBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles the bridge")
	}
	out := filepath.Join(t.TempDir(), "outpost-bridge.exe")
	cmd := exec.Command("go", "build", "-o", out, "github.com/outpost-dev/outpost/services/bridge/cmd/outpost-bridge")
	cmd.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=windows go build: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil || len(b) < 2 || string(b[:2]) != "MZ" {
		t.Fatalf("not a Windows executable: %v", err)
	}
	_ = runtime.GOOS
}

// The bridge compiles for linux/arm64 too (make dist ships it; tcp_scan's raw engine once
// used a syscall arm64 does not have). Compile and vet only: nothing is linked.
func TestLinuxArm64Build(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles the bridge")
	}
	cmd := exec.Command("go", "vet", "github.com/outpost-dev/outpost/services/bridge/...")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=linux GOARCH=arm64 go vet: %v\n%s", err, b)
	}
}
