package upgrade

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/release"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	data, installed string
	key             *release.Key
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	root := t.TempDir()
	f := fixture{data: filepath.Join(root, "data"), installed: filepath.Join(root, "usr-bin-outpost-bridge")}
	if err := os.MkdirAll(f.data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.installed, []byte("installed v1.0.0"), 0o755); err != nil {
		t.Fatal(err)
	}
	k, err := release.LoadOrCreateKey(filepath.Join(root, release.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	f.key = k
	return f
}

func (f fixture) build(version string) (release.Build, []byte, string) {
	b := release.Build{OS: "linux", Arch: "amd64", Version: version}
	data := []byte("build " + version)
	return b, data, f.key.Sign(b, release.Digest(data))
}

// The whole life: v1.0.0 installed takes v1.1.0 (trial, healthy → upgraded; restarts run
// v1.1.0), then v1.2.0 whose trial dies (the installed binary's next start rolls back to
// v1.1.0, and v1.2.0 is not wanted again), then v1.3.0 whose trial passes its deadline.
func TestUpgradeLifecycle(t *testing.T) {
	f := newFixture(t)
	if d, err := Launch(f.data, f.installed, "v1.0.0", "", t0); err != nil || d.Exec != "" {
		t.Fatalf("fresh launch: %+v %v", d, err)
	}
	b, data, sig := f.build("v1.1.0")
	d, err := Prepare(f.data, f.installed, "v1.0.0", b, data, sig, f.key.Public(), t0.Add(time.Minute), t0)
	if err != nil {
		t.Fatal(err)
	}
	v11 := BuildPath(f.data, "v1.1.0")
	if d.Exec != v11 || d.Env[0] != TrialEnv+"=v1.1.0" || d.Record.State != StateTrial {
		t.Fatalf("prepare: %+v", d)
	}
	if fi, err := os.Stat(v11); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("build file: %v %v", fi, err)
	}
	// the re-executed build is the trial and runs
	if d, err := Launch(f.data, v11, "v1.1.0", "v1.1.0", t0); err != nil || d.Exec != "" || d.Record.State != StateTrial {
		t.Fatalf("trial launch: %+v %v", d, err)
	}
	if r, ok, err := Healthy(f.data, "v1.1.0", t0.Add(time.Second)); err != nil || !ok || r.State != StateUpgraded {
		t.Fatalf("healthy: %+v %v %v", r, ok, err)
	}
	// a restart by the service manager starts the installed binary, which runs v1.1.0
	if d, err := Launch(f.data, f.installed, "v1.0.0", "", t0); err != nil || d.Exec != v11 {
		t.Fatalf("restart: %+v %v", d, err)
	}

	// v1.2.0 dies during its trial
	b, data, sig = f.build("v1.2.0")
	if _, err := Prepare(f.data, v11, "v1.1.0", b, data, sig, f.key.Public(), t0.Add(time.Minute), t0); err != nil {
		t.Fatal(err)
	}
	d, err = Launch(f.data, f.installed, "v1.0.0", "", t0.Add(time.Second))
	if err != nil || d.Exec != v11 || d.Record.State != StateRolledBack || !strings.Contains(d.Record.Reason, "v1.2.0 stopped before it was healthy") {
		t.Fatalf("after the trial died: %+v %v", d, err)
	}
	if Wanted("v1.1.0", "v1.2.0", d.Record) {
		t.Error("a rolled-back version is wanted again")
	}
	if !Wanted("v1.1.0", "v1.3.0", d.Record) {
		t.Error("the next version is not wanted")
	}

	// v1.3.0 runs but is never healthy: its own deadline rolls it back
	b, data, sig = f.build("v1.3.0")
	if _, err := Prepare(f.data, v11, "v1.1.0", b, data, sig, f.key.Public(), t0.Add(time.Minute), t0); err != nil {
		t.Fatal(err)
	}
	if _, expired, _ := Expired(f.data, "v1.3.0", t0.Add(30*time.Second)); expired {
		t.Fatal("expired before the deadline")
	}
	d, expired, err := Expired(f.data, "v1.3.0", t0.Add(2*time.Minute))
	if err != nil || !expired || d.Exec != v11 || Current(f.data) != v11 || d.Record.State != StateRolledBack {
		t.Fatalf("deadline: %+v %v %v (current %s)", d, expired, err, Current(f.data))
	}
	// a package of another version installed meanwhile runs itself
	if d, err := Launch(f.data, f.installed, "v2.0.0", "", t0); err != nil || d.Exec != "" || Current(f.data) != "" {
		t.Fatalf("new package: %+v %v", d, err)
	}
}

// A build whose signature does not verify is never written, and nothing switches.
func TestPrepareRefusesBadSignature(t *testing.T) {
	f := newFixture(t)
	other, _ := release.LoadOrCreateKey(filepath.Join(t.TempDir(), release.KeyFile))
	b, data, sig := f.build("v1.1.0")
	cases := []struct {
		name      string
		data      []byte
		sig, pub  string
		wantBadSg bool
	}{
		{"altered bytes", append([]byte{}, append(data, '!')...), sig, f.key.Public(), true},
		{"another key's signature", data, other.Sign(b, release.Digest(data)), f.key.Public(), true},
		{"pinned key is another hub's", data, sig, other.Public(), true},
	}
	for _, c := range cases {
		_, err := Prepare(f.data, f.installed, "v1.0.0", b, c.data, c.sig, c.pub, t0.Add(time.Minute), t0)
		if !errors.Is(err, release.ErrBadSignature) {
			t.Errorf("%s: %v", c.name, err)
		}
		if _, err := os.Stat(BuildPath(f.data, "v1.1.0")); err == nil {
			t.Errorf("%s: the build was written", c.name)
		}
		if Current(f.data) != "" {
			t.Errorf("%s: current switched", c.name)
		}
	}
	r, err := Fail(f.data, "v1.0.0", "v1.1.0", errors.New("bad signature"), t0)
	if err != nil || r.String() != "failed v1.1.0: bad signature" || Wanted("v1.0.0", "v1.1.0", r) {
		t.Errorf("fail record: %q %v", r.String(), err)
	}
}

func TestBehind(t *testing.T) {
	cases := []struct {
		v, pinned string
		want      bool
	}{
		{"v1.0.0", "v1.1.0", true},
		{"v1.1.0", "v1.0.0", false},
		{"v1.2.3", "v1.2.3", false},
		{"v1.2.3-rc1", "v1.2.3", true},
		{"v1.2.3", "v1.2.3-rc1", false},
		{"v1.10.0", "v1.9.0", false},
		{"cf7c0c5", "v0.1.0", true},
		{"dev", "dev", false},
	}
	for _, c := range cases {
		if got := Behind(c.v, c.pinned); got != c.want {
			t.Errorf("Behind(%s, %s) = %v", c.v, c.pinned, got)
		}
	}
}
