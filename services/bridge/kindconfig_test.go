package bridge_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-dev/outpost/services/bridge"
	"github.com/outpost-dev/outpost/services/bridge/cli"
	"github.com/outpost-dev/outpost/services/bridge/probe/fileread"
	"github.com/outpost-dev/outpost/services/bridge/probe/kinds"
	"github.com/outpost-dev/outpost/services/bridge/probe/sshexec"
	"github.com/outpost-dev/outpost/services/bridge/probe/tcpscan"
	"github.com/outpost-dev/outpost/services/bridge/probe/winrmexec"
)

func kindsSection(t *testing.T, text string) map[string]yaml.Node {
	t.Helper()
	var c struct {
		Kinds map[string]yaml.Node `yaml:"kinds"`
	}
	if err := yaml.Unmarshal([]byte(text), &c); err != nil {
		t.Fatal(err)
	}
	return c.Kinds
}

// The kinds section of the config file changes a kind's config; every other kind keeps its
// default.
func TestKindConfigs(t *testing.T) {
	cfgs, err := bridge.KindConfigs(kinds.All(), kindsSection(t, `
kinds:
  file_read:
    allowed_dirs: [/var/log/app, /srv/exports]
  tcp_scan: {rate: 500, engine: dial, initial_timeout: 750ms}
  ssh_exec:
`))
	if err != nil {
		t.Fatal(err)
	}
	fr := cfgs["file_read"].(fileread.Config)
	if strings.Join(fr.AllowedDirs, ",") != "/var/log/app,/srv/exports" || fr.MaxBytes != 256<<20 {
		t.Errorf("file_read: %+v (max_bytes must keep its default)", fr)
	}
	ts := cfgs["tcp_scan"].(tcpscan.Config)
	if ts.Rate != 500 || ts.Engine != "dial" || ts.InitialTimeout != 750*time.Millisecond || ts.MaxInFlight == 0 {
		t.Errorf("tcp_scan: %+v", ts)
	}
	if cfgs["ssh_exec"].(sshexec.Config) != sshexec.NewFactory().DefaultConfig() {
		t.Error("ssh_exec with an empty entry lost its defaults")
	}
	// the exec kinds' limits are embedded inline: their keys stay flat
	cfgs, err = bridge.KindConfigs(kinds.All(), kindsSection(t, `
kinds:
  ssh_exec: {max_commands: 7, command_timeout: 1m}
  winrm_exec: {max_output: 4096}
`))
	if err != nil {
		t.Fatal(err)
	}
	ssh, winrm := cfgs["ssh_exec"].(sshexec.Config), cfgs["winrm_exec"].(winrmexec.Config)
	if ssh.MaxCommands != 7 || ssh.CommandTimeout != time.Minute || ssh.MaxOutput != sshexec.NewFactory().DefaultConfig().(sshexec.Config).MaxOutput {
		t.Errorf("ssh_exec: %+v (max_output must keep its default)", ssh)
	}
	if winrm.MaxOutput != 4096 || winrm.MaxCommands != winrmexec.NewFactory().DefaultConfig().(winrmexec.Config).MaxCommands {
		t.Errorf("winrm_exec: %+v (max_commands must keep its default)", winrm)
	}
	if len(cfgs) != len(kinds.All()) {
		t.Errorf("%d configs for %d kinds", len(cfgs), len(kinds.All()))
	}
}

// Bad settings are refused at start, each naming kind, setting, line and what to do.
func TestKindConfigsRefused(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown kind", "kinds:\n  file_reader: {}\n", []string{"kinds.file_reader (line 2): this bridge has no such probe kind (it has echo, tcp_scan"}},
		{"unknown setting", "kinds:\n  file_read:\n    allowed_dir: [/x]\n", []string{"kinds.file_read.allowed_dir (line 3): unknown setting (known: allowed_dirs, max_bytes)"}},
		{"wrong type", "kinds:\n  tcp_scan: {rate: fast}\n", []string{"kinds.tcp_scan: line 2: cannot unmarshal", "fast"}},
		{"bad duration", "kinds:\n  ssh_exec: {connect_timeout: soon}\n", []string{"kinds.ssh_exec", "soon"}},
		{"negative", "kinds:\n  ssh_exec: {max_commands: -1}\n", []string{"kinds.ssh_exec.max_commands (line 2): -1 is negative"}},
		{"the kind's own validation", "kinds:\n  file_read: {allowed_dirs: [logs]}\n  tcp_scan: {engine: fast}\n",
			[]string{`kinds.file_read.allowed_dirs[0]: "logs" is not absolute`, `kinds.tcp_scan.engine: "fast": want raw or dial`}},
		{"inline setting unknown", "kinds:\n  winrm_exec: {max_command: 3}\n",
			[]string{"kinds.winrm_exec.max_command (line 2): unknown setting (known: connect_timeout, command_timeout, max_command_time, max_commands, max_output)"}},
		{"inline setting negative", "kinds:\n  winrm_exec: {max_output: -5}\n", []string{"kinds.winrm_exec.max_output (line 2): -5 is negative"}},
		{"exec limits' validation", "kinds:\n  ssh_exec: {command_timeout: 2h}\n  winrm_exec: {max_commands: 0, max_output: 10}\n",
			[]string{"kinds.ssh_exec.command_timeout: want a positive duration no longer than max_command_time",
				"kinds.winrm_exec.max_commands: want at least 1", "kinds.winrm_exec.max_output: want at least 1024 bytes"}},
		{"not a mapping", "kinds:\n  echo: [1]\n", []string{"kinds.echo (line 2): want a mapping"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bridge.KindConfigs(kinds.All(), kindsSection(t, tc.yaml))
			if err == nil {
				t.Fatalf("accepted, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// The bridge binary refuses a config file with a bad kinds section before connecting,
// naming the file.
func TestMainRefusesBadKindConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(path, []byte("hub: nats://127.0.0.1:1\nsite: dc1\nname: br1\nkinds:\n  file_read: {allowed_dirs: [relative]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := cli.Main([]string{"--config", path, "--data", t.TempDir()}, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2 (bad configuration); stderr: %s", code, stderr.String())
	}
	if want := path + `: kinds.file_read.allowed_dirs[0]: "relative" is not absolute`; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q does not say %q", stderr.String(), want)
	}
}
