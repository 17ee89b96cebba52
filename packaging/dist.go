// Package packaging builds what site administrators install: outpost-bridge binaries for
// each target, .deb and .rpm packages (nfpm, in-process: no Docker, no packaging tools on
// the build host) and a Windows zip with the service installer. It is its own module so
// nfpm and its dependencies never reach the bridge's.
package packaging

import (
	"archive/zip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager

	"github.com/outpost-dev/outpost/services/bridge/service"
)

// Target is one GOOS/GOARCH the bridge is built for.
type Target struct{ OS, Arch string }

func (t Target) String() string { return t.OS + "/" + t.Arch }

// ParseTarget reads "linux/amd64".
func ParseTarget(s string) (Target, error) {
	os, arch, ok := strings.Cut(s, "/")
	if !ok || os == "" || arch == "" {
		return Target{}, fmt.Errorf("target %q: want GOOS/GOARCH, e.g. linux/amd64", s)
	}
	return Target{os, arch}, nil
}

// Supported are the targets `make dist` builds; packages are made for the linux ones, the
// zip for windows.
var Supported = []Target{{"linux", "amd64"}, {"linux", "arm64"}, {"windows", "amd64"}}

// Formats of the Linux packages.
var Formats = []string{"deb", "rpm"}

// Config is one `make dist`.
type Config struct {
	// Repo is the workspace root (where go.work is): binaries are built from it.
	Repo string
	// Out receives every artifact and SHA256SUMS; it is created when missing.
	Out string
	// Version is the build's (libs/version.Version, linked in) and, made acceptable to dpkg
	// and rpm by PackageVersion, the packages'.
	Version string
	Targets []Target
	// Formats of Linux packages (default Formats).
	Formats []string
	// MTime stamps every file of the packages and the zip (reproducible artifacts);
	// default: SOURCE_DATE_EPOCH, else the last commit's time is the Makefile's job.
	MTime time.Time
	// Go is the go command (default "go").
	Go  string
	Log *slog.Logger
}

// DefaultConfig builds every supported target into dist/.
func DefaultConfig() Config {
	return Config{Repo: ".", Out: "dist", Version: "dev", Targets: Supported, Formats: Formats, Go: "go"}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Repo == "" {
		errs = append(errs, errors.New("repo: the workspace root is required"))
	} else if _, err := os.Stat(filepath.Join(c.Repo, "go.work")); err != nil {
		errs = append(errs, fmt.Errorf("repo %s: no go.work there: run from the repository's root or pass --repo", c.Repo))
	}
	if c.Out == "" {
		errs = append(errs, errors.New("out: an output directory is required"))
	}
	if strings.TrimSpace(c.Version) == "" || strings.ContainsAny(c.Version, " \t\n'\"/") {
		errs = append(errs, fmt.Errorf("version %q: want a word such as v1.2.3 (no spaces, quotes or slashes)", c.Version))
	}
	if len(c.Targets) == 0 {
		errs = append(errs, errors.New("targets: at least one, e.g. linux/amd64"))
	}
	for _, t := range c.Targets {
		if !slices.Contains(Supported, t) {
			errs = append(errs, fmt.Errorf("target %s: not supported; choose among %s", t, joinTargets(Supported)))
		}
	}
	for _, f := range c.Formats {
		if !slices.Contains(Formats, f) {
			errs = append(errs, fmt.Errorf("format %q: choose among %s", f, strings.Join(Formats, ", ")))
		}
	}
	return errors.Join(errs...)
}

func joinTargets(ts []Target) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.String())
	}
	return strings.Join(s, ", ")
}

// Artifacts are what Dist wrote, by kind, paths inside Out.
type Artifacts struct {
	Binaries, Packages, Zips []string
	Sums                     string
}

// Dist builds the binaries, packages them, and writes SHA256SUMS.
func Dist(ctx context.Context, c Config) (Artifacts, error) {
	if c.Go == "" {
		c.Go = "go"
	}
	if len(c.Formats) == 0 {
		c.Formats = Formats
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if err := c.Validate(); err != nil {
		return Artifacts{}, err
	}
	if c.MTime.IsZero() {
		c.MTime = time.Now().UTC().Truncate(time.Second)
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return Artifacts{}, err
	}
	var a Artifacts
	for _, t := range c.Targets {
		bin, err := buildBridge(ctx, c, t)
		if err != nil {
			return a, err
		}
		a.Binaries = append(a.Binaries, bin)
		switch t.OS {
		case "linux":
			for _, f := range c.Formats {
				p, err := linuxPackage(c, t, f, bin)
				if err != nil {
					return a, fmt.Errorf("%s %s: %w", f, t, err)
				}
				a.Packages = append(a.Packages, p)
			}
		case "windows":
			z, err := windowsZip(c, t, bin)
			if err != nil {
				return a, fmt.Errorf("zip %s: %w", t, err)
			}
			a.Zips = append(a.Zips, z)
		}
	}
	all := slices.Concat(a.Binaries, a.Packages, a.Zips)
	sums, err := writeSums(c.Out, all)
	if err != nil {
		return a, err
	}
	a.Sums = sums
	return a, nil
}

// buildBridge cross-compiles outpost-bridge (pure Go: CGO off, so one host builds every
// target) with the version linked in.
func buildBridge(ctx context.Context, c Config, t Target) (string, error) {
	name := fmt.Sprintf("outpost-bridge_%s_%s_%s", c.Version, t.OS, t.Arch)
	if t.OS == "windows" {
		name += ".exe"
	}
	out, err := filepath.Abs(filepath.Join(c.Out, name))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, c.Go, "build", "-trimpath",
		"-ldflags", "-s -w -X github.com/outpost-dev/outpost/libs/version.Version="+c.Version,
		"-o", out, "./services/bridge/cmd/outpost-bridge")
	cmd.Dir = c.Repo
	cmd.Env = append(os.Environ(), "GOOS="+t.OS, "GOARCH="+t.Arch, "CGO_ENABLED=0")
	c.Log.Info("building", "target", t.String(), "out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", t, err, b)
	}
	return out, nil
}

var (
	describeRe = regexp.MustCompile(`^(\d+\.\d+\.\d+)-(\d+)-g([0-9a-f]+)(-dirty)?$`)
	pkgVerRe   = regexp.MustCompile(`[^0-9A-Za-z.+~]`)
	releaseRe  = regexp.MustCompile(`^\d+\.\d+`)
)

// PackageVersion is v as dpkg and rpm order it: "v1.2.3" → 1.2.3; a pre-release sorts
// before its release ("1.2.3-rc1" → 1.2.3~rc1); a git describe past a tag after it
// ("1.2.3-4-gabc" → 1.2.3+git4.abc); an untagged build ("cf7c0c5", "86167be", "dev")
// before any release (0.0.0~cf7c0c5).
func PackageVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if m := describeRe.FindStringSubmatch(v); m != nil {
		s := m[1] + "+git" + m[2] + "." + m[3]
		if m[4] != "" {
			s += ".dirty"
		}
		return s
	}
	if !releaseRe.MatchString(v) { // untagged: a hash (even one starting with a digit), "dev"
		return "0.0.0~" + pkgVerRe.ReplaceAllString(strings.ReplaceAll(v, "-", "."), "")
	}
	return pkgVerRe.ReplaceAllString(strings.ReplaceAll(v, "-", "~"), "")
}

// linuxPackage makes one .deb or .rpm of the bridge: the binary, the hardened unit rendered
// by the bridge's own service package (the same text `service install` writes), the
// configuration templates and the data dir.
func linuxPackage(c Config, t Target, format, bin string) (string, error) {
	paths := service.DefaultPaths("linux", "")
	unit, err := service.Unit(service.UnitConfig{Bin: paths.Bin, ConfigFile: paths.ConfigFile, SecretsFile: paths.SecretsFile,
		DataDir: paths.DataDir, User: service.Name})
	if err != nil {
		return "", err
	}
	stage, err := os.MkdirTemp("", "outpost-package")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	write := func(name, text string) (string, error) {
		p := filepath.Join(stage, name)
		return p, os.WriteFile(p, []byte(text), 0o644)
	}
	src := map[string]string{}
	for name, text := range map[string]string{"unit": unit, "bridge.yaml": configTemplate, "bridge.env": secretsTemplate,
		"postinstall": postinstall, "preremove": preremove, "postremove": postremove} {
		if src[name], err = write(name, text); err != nil {
			return "", err
		}
	}
	doc := filepath.Join(c.Repo, "docs", "bridge-install.md")
	// rpm-based systems keep units under /usr/lib; Debian's is /lib (merged /usr or not).
	unitDir := filepath.Dir(paths.Unit)
	if format == "rpm" {
		unitDir = "/usr/lib/systemd/system"
	}
	fi := func(mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: c.MTime}
	}
	info := &nfpm.Info{
		Name:          service.Name,
		Arch:          t.Arch,
		Platform:      "linux",
		Version:       PackageVersion(c.Version),
		VersionSchema: "none",
		Release:       "1",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "Outpost maintainers <maintainers@outpost.dev>",
		Description:   service.Description,
		Vendor:        "Outpost",
		Homepage:      "https://outpost.dev",
		License:       "Apache-2.0",
		MTime:         c.MTime,
		Overridables: nfpm.Overridables{
			Umask: 0o022,
			Contents: files.Contents{
				{Source: bin, Destination: paths.Bin, FileInfo: fi(0o755)},
				{Source: src["unit"], Destination: unitDir + "/" + service.Name + ".service", FileInfo: fi(0o644)},
				{Source: src["bridge.yaml"], Destination: paths.ConfigFile, Type: files.TypeConfigNoReplace, FileInfo: fi(0o640)},
				{Source: src["bridge.env"], Destination: paths.SecretsFile, Type: files.TypeConfigNoReplace, FileInfo: fi(0o600)},
				{Destination: paths.ConfigDir, Type: files.TypeDir, FileInfo: fi(0o755)},
				{Destination: paths.DataDir, Type: files.TypeDir, FileInfo: fi(0o700)},
				{Source: doc, Destination: "/usr/share/doc/" + service.Name + "/bridge-install.md", FileInfo: fi(0o644)},
			},
			Scripts: nfpm.Scripts{PostInstall: src["postinstall"], PreRemove: src["preremove"], PostRemove: src["postremove"]},
			// useradd and awk: passwd (Debian) / shadow-utils (rpm) and an awk are on every base system.
			Depends: []string{"passwd"},
		},
	}
	if format == "rpm" {
		info.Depends = []string{"shadow-utils"}
	}
	if err := nfpm.PrepareForPackager(nfpm.WithDefaults(info), format); err != nil {
		return "", err
	}
	pkgr, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	out := filepath.Join(c.Out, pkgr.ConventionalFileName(info))
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	if err := pkgr.Package(info, f); err != nil {
		f.Close()
		os.Remove(out)
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	c.Log.Info("packaged", "format", format, "target", t.String(), "out", out)
	return out, nil
}

// windowsZip holds the binary, install.cmd/uninstall.cmd around `outpost-bridge service
// install|uninstall` (the Windows service wrapper is in the binary) and the install guide.
func windowsZip(c Config, t Target, bin string) (string, error) {
	out := filepath.Join(c.Out, fmt.Sprintf("outpost-bridge_%s_%s_%s.zip", c.Version, t.OS, t.Arch))
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	zw := zip.NewWriter(f)
	add := func(name string, r io.Reader) error {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: "outpost-bridge/" + name, Method: zip.Deflate, Modified: c.MTime})
		if err != nil {
			return err
		}
		_, err = io.Copy(w, r)
		return err
	}
	addFile := func(name, path string) error {
		r, err := os.Open(path)
		if err != nil {
			return err
		}
		defer r.Close()
		return add(name, r)
	}
	err = errors.Join(
		addFile("outpost-bridge.exe", bin),
		add("install.cmd", strings.NewReader(installCmd)),
		add("uninstall.cmd", strings.NewReader(uninstallCmd)),
		addFile("bridge-install.md", filepath.Join(c.Repo, "docs", "bridge-install.md")),
	)
	if err := errors.Join(err, zw.Close(), f.Close()); err != nil {
		os.Remove(out)
		return "", err
	}
	c.Log.Info("zipped", "target", t.String(), "out", out)
	return out, nil
}

// writeSums writes SHA256SUMS (sha256sum -c format) of the artifacts.
func writeSums(dir string, paths []string) (string, error) {
	var lines []string
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
		lines = append(lines, hex.EncodeToString(h.Sum(nil))+"  "+filepath.Base(p))
	}
	sort.Strings(lines)
	out := filepath.Join(dir, "SHA256SUMS")
	return out, os.WriteFile(out, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}
