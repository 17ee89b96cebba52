package service

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// Systemd manages the bridge as a systemd service. With Root set it only lays down files
// under Root (a package's staging tree, a test): no user, no ownership, no systemctl.
type Systemd struct {
	Root string
	Out  io.Writer
}

func (s Systemd) paths() Paths { return DefaultPaths("linux", "") }

// Install creates the user, the files and the unit, then enables and starts the service.
func (s Systemd) Install(c InstallConfig) error {
	installed := s.paths()
	if c.User == "" {
		c.User = Name
	}
	bin, err := s.binary(installed)
	if err != nil {
		return err
	}
	unit, err := Unit(UnitConfig{Bin: bin, ConfigFile: installed.ConfigFile, SecretsFile: installed.SecretsFile,
		DataDir: installed.DataDir, User: c.User, RawScans: c.RawScans})
	if err != nil {
		return err
	}
	c.Paths = installed.Under(s.Root)
	if s.Root == "" {
		if err := ensureUser(c.User, installed.DataDir); err != nil {
			return err
		}
	}
	if err := WriteFiles(c, installed.DataDir, filepath.Join(installed.ConfigDir, "ca.pem")); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.Paths.Unit), 0o755); err != nil {
		return err
	}
	if err := writeFile(c.Paths.Unit, []byte(unit), 0o644); err != nil {
		return err
	}
	if s.Root != "" {
		fmt.Fprintf(s.Out, "files written under %s (no user, ownership or systemctl in a staging root)\n", s.Root)
		return nil
	}
	// The bridge reads its configuration as its group and owns its data dir; the secrets
	// file stays root's (systemd reads EnvironmentFile before dropping privileges).
	if err := chown(c.User, c.Paths.DataDir, false); err != nil {
		return err
	}
	if err := chown(c.User, c.Paths.ConfigFile, true); err != nil {
		return err
	}
	if _, err := exec.LookPath("systemctl"); err != nil {
		fmt.Fprintf(s.Out, "installed %s; systemctl is not available here: start the bridge with\n  %s --config %s\n", c.Paths.Unit, bin, installed.ConfigFile)
		return nil
	}
	if err := s.systemctl("daemon-reload"); err != nil {
		return err
	}
	if err := s.systemctl("enable", "--now", Name); err != nil {
		return err
	}
	fmt.Fprintf(s.Out, "outpost-bridge installed and started; `outpost-bridge service status` shows how it is doing\n")
	return nil
}

// binary is the path the unit runs: the package's /usr/bin/outpost-bridge when this is it,
// else this executable copied to /usr/local/bin (a manual install from the archive).
func (s Systemd) binary(installed Paths) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return "", err
	}
	if self == installed.Bin || s.Root != "" {
		return installed.Bin, nil
	}
	dst := "/usr/local/bin/" + Name
	if self == dst {
		return dst, nil
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	if err := writeFile(dst, b, 0o755); err != nil {
		return "", fmt.Errorf("copy the binary to %s: %w", dst, err)
	}
	return dst, nil
}

// Uninstall stops and disables the service and removes its unit; the configuration and
// data (the bridge's identity, unsent results) stay unless purge.
func (s Systemd) Uninstall(purge bool) error {
	p := s.paths().Under(s.Root)
	if s.Root == "" {
		if _, err := exec.LookPath("systemctl"); err == nil {
			_ = s.systemctl("disable", "--now", Name)
		}
	}
	if err := os.Remove(p.Unit); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if s.Root == "" {
		if _, err := exec.LookPath("systemctl"); err == nil {
			_ = s.systemctl("daemon-reload")
		}
	}
	if purge {
		return errors.Join(os.RemoveAll(p.ConfigDir), os.RemoveAll(p.DataDir))
	}
	fmt.Fprintf(s.Out, "removed the service; kept %s and %s (the bridge's identity and unsent results): --purge removes them\n", p.ConfigDir, p.DataDir)
	return nil
}

// Start, Stop and Status go through systemctl.
func (s Systemd) Start() error { return s.systemctl("start", Name) }
func (s Systemd) Stop() error  { return s.systemctl("stop", Name) }
func (s Systemd) Status() error {
	return s.systemctl("status", "--no-pager", "--lines=0", Name)
}

func (s Systemd) systemctl(args ...string) error {
	if s.Root != "" {
		return fmt.Errorf("systemctl %s: not in a staging root (%s)", strings.Join(args, " "), s.Root)
	}
	cmd := exec.Command("systemctl", args...)
	cmd.Stdout, cmd.Stderr = s.Out, s.Out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// ensureUser creates the system user the bridge runs as, without a login shell.
func ensureUser(name, home string) error {
	if _, err := user.Lookup(name); err == nil {
		return nil
	}
	out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", home,
		"--shell", "/usr/sbin/nologin", "--comment", DisplayName, name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("create user %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// chown gives path to the user (groupOnly: to root and the user's group, for a file the
// bridge reads but must not change).
func chown(name, path string, groupOnly bool) error {
	u, err := user.Lookup(name)
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if groupOnly {
		return os.Chown(path, 0, gid)
	}
	return filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}
