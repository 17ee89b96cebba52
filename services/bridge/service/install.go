package service

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// InstallConfig is what `outpost-bridge service install` is told.
type InstallConfig struct {
	Paths Paths
	Hub   string
	Site  string
	Name  string
	// Token is the enrollment token; it goes to the secrets file only (0600), never to the
	// configuration file or a command line.
	Token string
	// CAFile is copied into ConfigDir as ca.pem.
	CAFile string
	Apps   []string
	// RawScans grants CAP_NET_RAW on Linux.
	RawScans bool
	// User runs the bridge on Linux (default Name).
	User string
	// Force overwrites an existing configuration.
	Force bool
}

// Validate reports every problem of what the administrator gave at once (Paths are the
// platform's, checked by WriteFiles).
func (c InstallConfig) Validate() error {
	var errs []error
	if c.Hub == "" {
		errs = append(errs, errors.New("--hub is required (tls://hub:4222 or wss://hub:443)"))
	}
	if c.Site == "" {
		errs = append(errs, errors.New("--site is required"))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("an enrollment token is required: OUTPOST_BRIDGE_TOKEN or --token-file (never on the command line, where every local user sees it)"))
	}
	if strings.ContainsAny(c.Token, "\n\r") {
		errs = append(errs, errors.New("the enrollment token holds a line break"))
	}
	return errors.Join(errs...)
}

// fileConfig is the part of the bridge's YAML configuration install writes; its keys are
// bridge.Config's (which refuses unknown ones).
type fileConfig struct {
	Hub  string   `yaml:"hub"`
	Site string   `yaml:"site"`
	Name string   `yaml:"name,omitempty"`
	Data string   `yaml:"data"`
	CA   string   `yaml:"ca,omitempty"`
	Apps []string `yaml:"apps,omitempty"`
}

// WriteFiles lays down the configuration (0640), the secrets file (0600), the hub's CA and
// the data dir (0700). dataDirInConfig is the data dir as the running bridge sees it (the
// installed path, not a staging root's). It refuses to overwrite an existing configuration
// unless Force: an administrator's edits are not lost to a second install.
func WriteFiles(c InstallConfig, dataDirInConfig, caInConfig string) error {
	if err := c.Validate(); err != nil {
		return err
	}
	p := c.Paths
	if p.ConfigFile == "" || p.DataDir == "" || p.SecretsFile == "" || p.ConfigDir == "" {
		return errors.New("paths: config dir and file, secrets file and data dir are required")
	}
	if _, err := os.Stat(p.ConfigFile); err == nil && !c.Force {
		return fmt.Errorf("%s exists: edit it, or install again with --force to replace it", p.ConfigFile)
	}
	for _, d := range []struct {
		dir  string
		mode os.FileMode
	}{{p.ConfigDir, 0o755}, {p.DataDir, 0o700}} {
		if err := os.MkdirAll(d.dir, d.mode); err != nil {
			return err
		}
		if err := os.Chmod(d.dir, d.mode); err != nil {
			return err
		}
	}
	fc := fileConfig{Hub: c.Hub, Site: c.Site, Name: c.Name, Data: dataDirInConfig, Apps: c.Apps}
	if c.CAFile != "" {
		ca, err := os.ReadFile(c.CAFile)
		if err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
		if err := writeFile(filepath.Join(p.ConfigDir, "ca.pem"), ca, 0o644); err != nil {
			return err
		}
		fc.CA = caInConfig
	}
	y, err := yaml.Marshal(fc)
	if err != nil {
		return err
	}
	head := "# outpost-bridge configuration (flags and OUTPOST_BRIDGE_* override it).\n# The enrollment token is in " +
		filepath.Base(p.SecretsFile) + " (0600), not here.\n"
	if err := writeFile(p.ConfigFile, append([]byte(head), y...), 0o640); err != nil {
		return err
	}
	return writeFile(p.SecretsFile, []byte("OUTPOST_BRIDGE_TOKEN="+c.Token+"\n"), 0o600)
}

// writeFile replaces name with data at mode through a temporary file, so a secret is never
// readable at a wider mode, even for an instant.
func writeFile(name string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), name)
}
