package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/release"
	"github.com/outpost-dev/outpost/services/bridge/upgrade"
)

// buildBridge builds outpost-bridge with the version linked in.
func buildBridge(t *testing.T, dir, version string) string {
	t.Helper()
	out := filepath.Join(dir, "outpost-bridge-"+version)
	cmd := exec.Command("go", "build", "-ldflags", "-X github.com/outpost-dev/outpost/libs/version.Version="+version, "-o", out,
		"github.com/outpost-dev/outpost/services/bridge/cmd/outpost-bridge")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", version, err, b)
	}
	return out
}

// supervised runs the installed bridge as systemd's Restart=on-failure would: started again
// (as the installed binary) whenever it exits with an error.
type supervised struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	log    *syncBuffer
	starts int
	stop   chan struct{}
	done   chan struct{}
}

func supervise(t *testing.T, bin string, args ...string) *supervised {
	s := &supervised{log: &syncBuffer{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			cmd := exec.Command(bin, args...)
			cmd.Stdout, cmd.Stderr = s.log, s.log
			cmd.Env = append(os.Environ(), "OUTPOST_LOG_FORMAT=text")
			if err := cmd.Start(); err != nil {
				fmt.Fprintf(s.log, "supervisor: start: %v\n", err)
				return
			}
			s.mu.Lock()
			s.cmd, s.starts = cmd, s.starts+1
			s.mu.Unlock()
			err := cmd.Wait()
			fmt.Fprintf(s.log, "supervisor: exited: %v\n", err)
			select {
			case <-s.stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if err == nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(s.stop)
		s.mu.Lock()
		if s.cmd != nil && s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
		}
		s.mu.Unlock()
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			s.mu.Lock()
			_ = s.cmd.Process.Kill()
			s.mu.Unlock()
			<-s.done
		}
		if t.Failed() {
			t.Logf("--- bridge log (tail):\n%s", tail(s.log.String(), 60))
		}
	})
	return s
}

func (s *supervised) startCount() int { s.mu.Lock(); defer s.mu.Unlock(); return s.starts }

// The hub pins a newer signed build: the bridge downloads it, checks its signature, swaps
// and re-executes, and reports the new version. A build whose signature is broken is refused
// and reported. A build that exits at once is rolled back (by the installed binary the
// service manager starts again) and reported; the bridge runs the previous build.
func TestSignedSelfUpgrade(t *testing.T) {
	t.Parallel()
	bins := t.TempDir()
	installed := buildBridge(t, bins, "v1.0.0")
	newer := buildBridge(t, bins, "v1.1.0")
	broken := buildBridge(t, bins, "v1.2.0")
	src := filepath.Join(t.TempDir(), "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nimport \"os\"\n\nfunc main() { os.Exit(3) }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dies := filepath.Join(bins, "dies-at-once")
	if b, err := exec.Command("go", "build", "-o", dies, src).CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}

	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "dc1", "127.0.0.0/8", true)
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, "outpost"), append([]string{"--data", h.dir, "--server", "http://" + h.http}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("outpost %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for _, b := range []struct{ file, version string }{{newer, "v1.1.0"}, {broken, "v1.2.0"}, {dies, "v1.3.0"}} {
		out := cli("bridge-builds", "add", b.file, "--version", b.version, "--os", runtime.GOOS, "--arch", runtime.GOARCH, "--nats", "nats://"+h.nats)
		if !strings.Contains(out, "stored bridge build "+b.version) {
			t.Fatalf("bridge-builds add: %s", out)
		}
	}
	if fi, err := os.Stat(filepath.Join(h.dir, release.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("release key: %v %v", fi, err)
	}
	// Break v1.2.0's signature in the store (as a tampered store or a foreign signer would).
	_, js := h.serviceConn(t)
	ctx := context.Background()
	obs, err := js.ObjectStore(ctx, release.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	name := release.Build{OS: runtime.GOOS, Arch: runtime.GOARCH, Version: "v1.2.0"}.Object()
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	meta := info.ObjectMeta
	sig := []byte(meta.Headers.Get(release.HeaderSignature))
	sig[3] ^= 1
	meta.Headers.Set(release.HeaderSignature, string(sig))
	if err := obs.UpdateMeta(ctx, name, meta); err != nil {
		t.Fatal(err)
	}

	data := filepath.Join(t.TempDir(), "data")
	br := supervise(t, installed, "--hub", "nats://"+h.nats, "--site", "dc1", "--name", "br-up", "--token", tok, "--data", data)
	h.waitStatus(t, "br-up", "up")
	agent := func() (version, upg string) {
		var out struct {
			Agents []struct{ Name, Version, Upgrade string }
		}
		h.mustAPI(t, "GET", "/api/v1/agents", nil, &out)
		for _, a := range out.Agents {
			if a.Name == "br-up" {
				return a.Version, a.Upgrade
			}
		}
		return "", ""
	}
	waitAgent := func(wantVersion, wantUpgrade string) {
		t.Helper()
		eventually(t, 3*time.Minute, func() error {
			v, u := agent()
			if v != wantVersion || !strings.HasPrefix(u, wantUpgrade) {
				return fmt.Errorf("agent br-up: version %q upgrade %q; want %q and %q…", v, u, wantVersion, wantUpgrade)
			}
			return nil
		})
	}
	if v, _ := agent(); v != "v1.0.0" {
		t.Fatalf("installed version %q", v)
	}

	// 1. a newer signed build is taken
	if out := cli("site", "pin-version", "dc1", "v1.1.0"); !strings.Contains(out, "upgrade to v1.1.0") {
		t.Fatalf("pin-version: %s", out)
	}
	waitAgent("v1.1.0", "upgraded v1.1.0")
	if got := upgrade.Current(data); filepath.Base(got) != "outpost-bridge-v1.1.0" {
		t.Errorf("current build %q", got)
	}
	echo(t, h, "dc1", "after the upgrade")
	if ls := cli("agents", "ls"); !strings.Contains(ls, "upgraded v1.1.0") {
		t.Errorf("agents ls does not show the upgrade:\n%s", ls)
	}

	// 2. a broken signature is refused and reported; the bridge keeps its build
	cli("site", "pin-version", "dc1", "v1.2.0")
	waitAgent("v1.1.0", "failed v1.2.0: build v1.2.0 ("+runtime.GOOS+"/"+runtime.GOARCH+"): bad signature")
	if _, err := os.Stat(upgrade.BuildPath(data, "v1.2.0")); err == nil {
		t.Error("the build with a broken signature was written to the data dir")
	}

	// 3. a build that exits at once is rolled back
	starts := br.startCount()
	cli("site", "pin-version", "dc1", "v1.3.0")
	waitAgent("v1.1.0", "rolled back v1.3.0: build v1.3.0 stopped before it was healthy")
	if br.startCount() <= starts {
		t.Error("the service manager did not have to start the bridge again")
	}
	echo(t, h, "dc1", "after the rollback")
	if st, _ := exec.Command(installed, "status", "--data", data).CombinedOutput(); !strings.Contains(string(st), "rolled back v1.3.0") {
		t.Errorf("outpost-bridge status does not report the rollback:\n%s", st)
	}
}
