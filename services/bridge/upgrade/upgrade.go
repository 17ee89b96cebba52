// Package upgrade is the bridge's signed self-upgrade. The hub pins a version per site; a
// bridge behind it downloads its platform's build, checks the signature against the release
// key it pinned at enrollment, writes the build into its data dir (the only place a hardened
// unit lets it write: ProtectSystem=strict keeps /usr/bin read-only), points
// <data>/builds/current at it with an atomic rename, and re-executes into it. The new build is
// on trial until it is healthy (connected, heartbeat sent); if it is not within the deadline,
// or dies first, the previous build is put back and the failure reported — and that version
// is not tried again until the hub pins another.
//
// Every start of the installed binary goes through Launch, which is what makes the trial
// safe without a supervisor of our own: a trial build that dies is restarted by the service
// manager (systemd Restart=on-failure, the Windows SCM's recovery) as the installed binary,
// which finds the trial unfinished and rolls back before anything else runs.
package upgrade

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/release"
)

// States of an upgrade, as the bridge reports them (heartbeat, status file, agents ls).
const (
	StatePending     = "pending"     // the hub pins a newer version; not started yet
	StateDownloading = "downloading" // fetching the build from the hub
	StateVerifying   = "verifying"   // checking digest and signature
	StateTrial       = "trial"       // the new build runs, not yet healthy
	StateUpgraded    = "upgraded"    // the new build came up healthy
	StateFailed      = "failed"      // refused or failed before switching (reason says why)
	StateRolledBack  = "rolled back" // the new build was not healthy in time: the previous one runs
)

// TrialEnv names, in the environment of a re-executed build, the version it was started to
// try: a start without it that finds a trial unfinished knows the trial build died.
const TrialEnv = "OUTPOST_BRIDGE_UPGRADE_TRIAL"

// Record is <data>/upgrade.json: the last upgrade's state, kept across the re-exec.
type Record struct {
	State string `json:"state"`
	// From is the version upgraded from and FromPath its binary, to roll back to.
	From     string `json:"from,omitempty"`
	FromPath string `json:"from_path,omitempty"`
	To       string `json:"to,omitempty"`
	// Base is the installed binary's version (the one the service manager starts): a later
	// package install of another version runs itself rather than an older data-dir build.
	Base     string    `json:"base,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Deadline time.Time `json:"deadline,omitzero"`
	Time     time.Time `json:"time"`
}

// String is the state as reported: "upgraded", "failed: bad signature …".
func (r Record) String() string {
	if r.State == "" {
		return ""
	}
	s := r.State
	if r.To != "" {
		s += " " + r.To
	}
	if r.Reason != "" {
		s += ": " + r.Reason
	}
	return s
}

// Dir is where builds live in the data dir.
func Dir(dataDir string) string { return filepath.Join(dataDir, "builds") }

func recordPath(dataDir string) string  { return filepath.Join(dataDir, "upgrade.json") }
func currentPath(dataDir string) string { return filepath.Join(Dir(dataDir), "current") }

// BuildPath is where a verified build of version is written.
func BuildPath(dataDir, version string) string {
	return filepath.Join(Dir(dataDir), "outpost-bridge-"+version+exeSuffix)
}

// Load reads the record (zero when there is none).
func Load(dataDir string) (Record, error) {
	var r Record
	b, err := os.ReadFile(recordPath(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w (delete it to forget the last upgrade)", recordPath(dataDir), err)
	}
	return r, nil
}

// Save replaces the record atomically (write, sync, rename).
func Save(dataDir string, r Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return replaceFile(recordPath(dataDir), b, 0o600)
}

func replaceFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	err = errors.Join(werr, tmp.Chmod(mode), tmp.Sync(), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// Current is the build <data>/builds/current points at ("" when none).
func Current(dataDir string) string {
	t, err := os.Readlink(currentPath(dataDir))
	if err != nil {
		return ""
	}
	if !filepath.IsAbs(t) {
		t = filepath.Join(Dir(dataDir), t)
	}
	return t
}

// setCurrent points current at path ("" removes it) with a rename over the old link, so a
// crash leaves either the old or the new one.
func setCurrent(dataDir, path string) error {
	if path == "" {
		err := os.Remove(currentPath(dataDir))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	tmp := currentPath(dataDir) + ".new"
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(path), tmp); err != nil {
		return err
	}
	return os.Rename(tmp, currentPath(dataDir))
}

// Decision is what a starting bridge runs.
type Decision struct {
	// Exec is the build to re-execute into ("" runs this binary).
	Exec string
	// Env is added to the environment of Exec.
	Env []string
	// Record is the upgrade state after the decision (reported in heartbeats).
	Record Record
}

// Launch decides, at the start of the bridge (before anything opens the data dir), what
// runs: a trial build that died is rolled back; the build current points at runs instead of
// the installed binary it was upgraded from. self is this executable and version its version;
// trial is TrialEnv's value.
func Launch(dataDir, self, version, trial string, now time.Time) (Decision, error) {
	r, err := Load(dataDir)
	if err != nil {
		return Decision{}, err
	}
	if r.State == StateTrial {
		if trial != "" && trial == version && r.To == version {
			return Decision{Record: r}, nil // this is the trial: it runs, Healthy ends it
		}
		// The trial build was started but this start is not it: it died (or the host
		// rebooted) before it was healthy. Put the previous build back.
		prev := ""
		if r.FromPath != "" && isUnder(r.FromPath, Dir(dataDir)) {
			prev = r.FromPath
		}
		if err := setCurrent(dataDir, prev); err != nil {
			return Decision{}, fmt.Errorf("roll back to %s: %w", r.From, err)
		}
		r.State, r.Reason, r.Time = StateRolledBack, "build "+r.To+" stopped before it was healthy (connected and heartbeat sent); "+r.From+" runs again", now
		if err := Save(dataDir, r); err != nil {
			return Decision{}, err
		}
	}
	cur := Current(dataDir)
	if cur == "" || sameFile(cur, self) {
		return Decision{Record: r}, nil
	}
	if r.Base != "" && r.Base != version {
		// The installed binary changed (a package of another version): it runs, and the
		// data-dir build is forgotten.
		_ = setCurrent(dataDir, "")
		return Decision{Record: r}, nil
	}
	if _, err := os.Stat(cur); err != nil {
		_ = setCurrent(dataDir, "")
		return Decision{Record: r}, nil
	}
	return Decision{Exec: cur, Record: r}, nil
}

// Prepare writes a verified build into the data dir and opens its trial: the record says
// trial until deadline, current points at the build. The caller then stops cleanly and
// re-executes into the returned Decision.
func Prepare(dataDir, self, version string, b release.Build, data []byte, sig, pub string, deadline, now time.Time) (Decision, error) {
	if err := release.Verify(pub, b, data, sig); err != nil {
		return Decision{}, err
	}
	if err := os.MkdirAll(Dir(dataDir), 0o700); err != nil {
		return Decision{}, err
	}
	path := BuildPath(dataDir, b.Version)
	if err := replaceFile(path, data, 0o755); err != nil {
		return Decision{}, fmt.Errorf("write build %s: %w", path, err)
	}
	prev, _ := Load(dataDir)
	base := prev.Base
	if base == "" || !isUnder(self, Dir(dataDir)) {
		base = version // the installed binary is upgrading (the first time, or after a package install)
	}
	r := Record{State: StateTrial, From: version, FromPath: self, To: b.Version, Base: base, Deadline: deadline, Time: now}
	if err := Save(dataDir, r); err != nil {
		return Decision{}, err
	}
	if err := setCurrent(dataDir, path); err != nil {
		return Decision{}, err
	}
	return Decision{Exec: path, Env: []string{TrialEnv + "=" + b.Version}, Record: r}, nil
}

// Healthy ends this build's trial: it is the upgraded build from now on.
func Healthy(dataDir, version string, now time.Time) (Record, bool, error) {
	r, err := Load(dataDir)
	if err != nil || r.State != StateTrial || r.To != version {
		return r, false, err
	}
	r.State, r.Reason, r.Time = StateUpgraded, "", now
	return r, true, Save(dataDir, r)
}

// Expired rolls this build's trial back when its deadline passed without Healthy: the
// returned Decision re-executes the previous build.
func Expired(dataDir, version string, now time.Time) (Decision, bool, error) {
	r, err := Load(dataDir)
	if err != nil || r.State != StateTrial || r.To != version || now.Before(r.Deadline) {
		return Decision{}, false, err
	}
	prev := ""
	if isUnder(r.FromPath, Dir(dataDir)) {
		prev = r.FromPath
	}
	if err := setCurrent(dataDir, prev); err != nil {
		return Decision{}, false, err
	}
	r.State, r.Reason, r.Time = StateRolledBack, "build "+r.To+" was not healthy (connected and heartbeat sent) by "+r.Deadline.UTC().Format(time.RFC3339)+"; "+r.From+" runs again", now
	if err := Save(dataDir, r); err != nil {
		return Decision{}, false, err
	}
	return Decision{Exec: r.FromPath, Record: r}, true, nil
}

// Fail records an upgrade to version that did not happen (download, signature, write).
func Fail(dataDir, from, to string, reason error, now time.Time) (Record, error) {
	prev, _ := Load(dataDir)
	r := Record{State: StateFailed, From: from, To: to, Base: prev.Base, Reason: reason.Error(), Time: now}
	return r, Save(dataDir, r)
}

// Wanted reports whether a bridge of version should upgrade to pinned, given the last
// record: not when it runs it already, and not to a version that failed or was rolled back
// (until the hub pins another).
func Wanted(version, pinned string, last Record) bool {
	if pinned == "" || pinned == version {
		return false
	}
	if last.To == pinned && (last.State == StateFailed || last.State == StateRolledBack) {
		return false
	}
	return Behind(version, pinned)
}

// Behind reports whether version is older than pinned. Versions of the form vX.Y.Z[-pre]
// compare numerically (a pre-release before its release); anything else (a git hash, "dev")
// is behind any other version: the pin is the operator's explicit choice.
func Behind(version, pinned string) bool {
	a, aok := parse(version)
	b, bok := parse(pinned)
	if !aok || !bok {
		return version != pinned
	}
	for i := range 3 {
		if a.n[i] != b.n[i] {
			return a.n[i] < b.n[i]
		}
	}
	switch {
	case a.pre == b.pre:
		return false
	case a.pre == "":
		return false
	case b.pre == "":
		return true
	}
	return a.pre < b.pre
}

type semver struct {
	n   [3]int
	pre string
}

func parse(v string) (semver, bool) {
	v = strings.TrimPrefix(v, "v")
	core, pre, _ := strings.Cut(v, "-")
	core, _, _ = strings.Cut(core, "+")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return semver{}, false
	}
	var s semver
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return semver{}, false
		}
		s.n[i] = n
	}
	s.pre = pre
	return s, true
}

func isUnder(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && !strings.HasPrefix(rel, "..") && !filepath.IsAbs(rel)
}

func sameFile(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}
