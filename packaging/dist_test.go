package packaging

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestPackageVersion(t *testing.T) {
	cases := []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-rc1", "1.2.3~rc1"},
		{"v1.2.3-4-gabc123", "1.2.3+git4.abc123"},
		{"v1.2.3-4-gabc123-dirty", "1.2.3+git4.abc123.dirty"},
		{"cf7c0c5", "0.0.0~cf7c0c5"},
		{"cf7c0c5-dirty", "0.0.0~cf7c0c5.dirty"},
		{"86167be", "0.0.0~86167be"},
		{"dev", "0.0.0~dev"},
	}
	for _, c := range cases {
		if got := PackageVersion(c.in); got != c.want {
			t.Errorf("PackageVersion(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// dpkg orders them as a site administrator expects
	if _, err := exec.LookPath("dpkg"); err == nil {
		for _, p := range [][2]string{{"v1.2.3-rc1", "v1.2.3"}, {"v1.2.3", "v1.2.3-4-gabc"}, {"cf7c0c5", "v0.1.0"}, {"86167be", "v0.1.0"}} {
			if err := exec.Command("dpkg", "--compare-versions", PackageVersion(p[0]), "lt", PackageVersion(p[1])).Run(); err != nil {
				t.Errorf("dpkg: %s (%s) is not older than %s (%s)", p[0], PackageVersion(p[0]), p[1], PackageVersion(p[1]))
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	repo, _ := filepath.Abs("..")
	good := DefaultConfig()
	good.Repo = repo
	cases := []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"default", func(*Config) {}, nil},
		{"everything wrong", func(c *Config) {
			c.Repo = t.TempDir()
			c.Out = ""
			c.Version = "1 2"
			c.Targets = []Target{{"plan9", "386"}}
			c.Formats = []string{"apk"}
		}, []string{"no go.work", "out:", `version "1 2"`, "target plan9/386: not supported", `format "apk"`}},
		{"no targets", func(c *Config) { c.Targets = nil }, []string{"targets: at least one"}},
	}
	for _, c := range cases {
		cfg := good
		c.edit(&cfg)
		err := cfg.Validate()
		if len(c.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", c.name, err, w)
			}
		}
	}
	if _, err := ParseTarget("linux"); err == nil {
		t.Error("ParseTarget(linux) accepted")
	}
}

// The .deb as a site administrator gets it: installed with dpkg into a staging root (its own
// admin dir, chrootless maintainer scripts acting on DPKG_ROOT: no user, file or package
// database of this machine is touched), files, owners and modes checked, the installed unit
// verified by systemd where systemd-analyze exists, and the installed binary started from
// the installed configuration against a real hub: it enrolls and answers a probe. The .rpm
// is built beside it (no rpm tool is needed to make one).
func TestDebInstallsAndBridgeAnswers(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg is not installed (a Debian system): the .deb cannot be installed here")
	}
	if os.Geteuid() != 0 {
		t.Skip("installing a package (owners of its files) needs root")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	hubBin := filepath.Join(t.TempDir(), "outpost")
	var hubErr error
	var wg sync.WaitGroup
	wg.Go(func() { // the hub builds while the bridge does
		cmd := exec.CommandContext(ctx, "go", "build", "-o", hubBin, "./services/outpost/cmd/outpost")
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			hubErr = fmt.Errorf("build the hub: %v\n%s", err, out)
		}
	})
	cfg := DefaultConfig()
	cfg.Repo, cfg.Out, cfg.Version, cfg.Targets = repo, dist, "v0.9.1-test", []Target{{"linux", "amd64"}}
	a, err := Dist(ctx, cfg)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if hubErr != nil {
		t.Fatal(hubErr)
	}
	var deb string
	for _, p := range a.Packages {
		if strings.HasSuffix(p, ".deb") {
			deb = p
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() < 1<<20 {
			t.Errorf("package %s: %v (%v)", p, err, fi)
		}
	}
	if len(a.Packages) != 2 || deb == "" || !strings.HasSuffix(a.Packages[1], ".x86_64.rpm") {
		t.Fatalf("packages: %v", a.Packages)
	}
	sums, _ := os.ReadFile(a.Sums)
	if n := strings.Count(string(sums), "\n"); n != 3 {
		t.Errorf("SHA256SUMS has %d lines:\n%s", n, sums)
	}

	root := stagingRoot(t)
	dpkg := func(args ...string) string {
		t.Helper()
		// --force-depends: the staging root has no passwd package (the host's useradd does
		// the work, on the root's /etc through --prefix).
		cmd := exec.Command("dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := dpkg("-i", deb)
	if !strings.Contains(out, "set hub and site in /etc/outpost-bridge/bridge.yaml") {
		t.Errorf("postinstall does not say what to do next:\n%s", out)
	}
	if st := dpkg("-s", "outpost-bridge"); !strings.Contains(st, "Status: install ok installed") || !strings.Contains(st, "Version: 0.9.1~test-1") {
		t.Fatalf("dpkg -s:\n%s", st)
	}
	uid, gid := lookupUser(t, root, "outpost-bridge")
	files := []struct {
		path     string
		mode     os.FileMode
		uid, gid int
	}{
		{"usr/bin/outpost-bridge", 0o755, 0, 0},
		{"lib/systemd/system/outpost-bridge.service", 0o644, 0, 0},
		{"etc/outpost-bridge", os.ModeDir | 0o755, 0, 0},
		{"etc/outpost-bridge/bridge.yaml", 0o640, 0, gid},
		{"etc/outpost-bridge/bridge.env", 0o600, 0, 0},
		{"var/lib/outpost-bridge", os.ModeDir | 0o700, uid, gid},
		{"usr/share/doc/outpost-bridge/bridge-install.md", 0o644, 0, 0},
	}
	for _, f := range files {
		fi, err := os.Lstat(filepath.Join(root, f.path))
		if err != nil {
			t.Errorf("%s: %v", f.path, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != f.mode || int(st.Uid) != f.uid || int(st.Gid) != f.gid {
			t.Errorf("/%s: %v %d:%d, want %v %d:%d", f.path, fi.Mode(), st.Uid, st.Gid, f.mode, f.uid, f.gid)
		}
	}
	if b, _ := os.ReadFile("/etc/passwd"); strings.Contains(string(b), "\noutpost-bridge:") {
		t.Error("the host's /etc/passwd got the user (the staging root's should have)")
	}
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/outpost-bridge.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/bin/outpost-bridge --config /etc/outpost-bridge/bridge.yaml\n", "User=outpost-bridge\n",
		"ProtectSystem=strict\n", "ReadWritePaths=/var/lib/outpost-bridge\n", "NoNewPrivileges=yes\n", "EnvironmentFile=-/etc/outpost-bridge/bridge.env\n"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("installed unit lacks %q", want)
		}
	}
	verifyUnit(t, root, unit)

	// A hub, and the site the administrator was given a token for.
	h := startHub(t, hubBin)
	var site struct{ Token string }
	h.api(t, "POST", "/api/v1/sites", map[string]any{"name": "pkg", "ranges": []string{"127.0.0.0/8"}, "auto_approve": true}, &site)
	// The administrator's edits: hub and site in bridge.yaml, the token in bridge.env.
	conf := filepath.Join(root, "etc/outpost-bridge/bridge.yaml")
	y, _ := os.ReadFile(conf)
	y = bytes.Replace(y, []byte(`hub: ""`), []byte(`hub: nats://`+h.nats), 1)
	y = bytes.Replace(y, []byte(`site: ""`), []byte("site: pkg\nname: br-pkg"), 1)
	if err := os.WriteFile(conf, y, 0o640); err != nil {
		t.Fatal(err)
	}
	env := filepath.Join(root, "etc/outpost-bridge/bridge.env")
	if err := os.WriteFile(env, []byte("OUTPOST_BRIDGE_TOKEN="+site.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(env); fi.Mode() != 0o600 {
		t.Fatalf("bridge.env is %v after the edit", fi.Mode())
	}
	// As systemd would run it (EnvironmentFile, ExecStart), with the data dir moved under the
	// staging root; the version is the package's.
	bin := filepath.Join(root, "usr/bin/outpost-bridge")
	if v, _ := exec.Command(bin, "--version").CombinedOutput(); !strings.Contains(string(v), "v0.9.1-test") {
		t.Errorf("installed binary's version: %s", v)
	}
	br := exec.Command(bin, "--config", conf, "--data", filepath.Join(root, "var/lib/outpost-bridge"))
	br.Env = append(os.Environ(), "OUTPOST_BRIDGE_TOKEN="+site.Token, "OUTPOST_LOG_FORMAT=text")
	brLog := &logBuffer{}
	br.Stdout, br.Stderr = brLog, brLog
	if err := br.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopProcess(br) })
	var answer struct {
		Results []struct {
			Status string
			Data   struct{ Msg string }
		}
	}
	eventually(t, 60*time.Second, func() error {
		answer.Results = nil
		code := h.api(t, "POST", "/api/v1/probes", map[string]any{"site": "pkg", "kind": "echo", "params": map[string]any{"msg": "from the package"}, "timeout": "10s"}, &answer)
		if code != 200 || len(answer.Results) == 0 || answer.Results[len(answer.Results)-1].Status != "ok" {
			return fmt.Errorf("probe: %d %+v\nbridge log:\n%s", code, answer, brLog.tail(15))
		}
		return nil
	})
	if got := answer.Results[len(answer.Results)-1].Data.Msg; got != "from the package" {
		t.Errorf("echo answered %q", got)
	}
}

// stagingRoot is an empty system root with its own dpkg database and the /etc files useradd
// --prefix edits.
func stagingRoot(t *testing.T) string {
	root := t.TempDir()
	for _, d := range []string{"etc", "var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range map[string]string{
		"var/lib/dpkg/status": "", "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n",
		"etc/shadow": "root:*:19000:0:99999:7:::\n", "etc/gshadow": "root:*::\n",
	} {
		mode := os.FileMode(0o644)
		if strings.Contains(name, "shadow") {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(root, name), []byte(text), mode); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func lookupUser(t *testing.T, root, name string) (uid, gid int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) > 3 && f[0] == name {
			fmt.Sscan(f[2], &uid)
			fmt.Sscan(f[3], &gid)
			return uid, gid
		}
	}
	t.Fatalf("postinstall created no user %s in the staging root:\n%s", name, b)
	return 0, 0
}

// verifyUnit runs systemd-analyze verify on the installed unit. Its ExecStart names
// /usr/bin/outpost-bridge, which is in the staging root, not on this host: the unit is
// verified with that one path pointing into the root, every other line as installed.
func verifyUnit(t *testing.T, root string, unit []byte) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed (Debian package systemd): the unit is not verified by systemd")
		return
	}
	dir := t.TempDir()
	u := bytes.ReplaceAll(unit, []byte("ExecStart=/usr/bin/outpost-bridge "), []byte("ExecStart="+filepath.Join(root, "usr/bin/outpost-bridge")+" "))
	p := filepath.Join(dir, "outpost-bridge.service")
	if err := os.WriteFile(p, u, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", p).CombinedOutput()
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "outpost-bridge.service") {
			ours = append(ours, l)
		}
	}
	if len(ours) > 0 || (err != nil && len(strings.TrimSpace(string(out))) == 0) {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

type testHub struct {
	http, nats, dir string
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startHub(t *testing.T, bin string) *testHub {
	h := &testHub{http: freeAddr(t), nats: freeAddr(t), dir: t.TempDir()}
	cmd := exec.Command(bin, "up", "--data", h.dir, "--http", h.http, "--nats", h.nats, "--no-local-bridge")
	log := &logBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "OUTPOST_LOG_FORMAT=text")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopProcess(cmd)
		if t.Failed() {
			t.Logf("hub log:\n%s", log.tail(30))
		}
	})
	eventually(t, 60*time.Second, func() error {
		resp, err := http.Get("http://" + h.http + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	return h
}

// api calls the gateway as admin and decodes a 200's body into out; it returns the status.
func (h *testHub) api(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(h.dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, "http://"+h.http+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 && out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return resp.StatusCode
}

func stopProcess(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", d, err)
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := strings.Split(l.b.String(), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
