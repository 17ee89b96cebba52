package e2e

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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/services/outpost/hub"
)

var binDir string

func TestMain(m *testing.M) {
	if os.Getenv(ledgerEnv) != "" {
		os.Exit(runLedger()) // this binary re-executed as the real-software test's application
	}
	dir, err := os.MkdirTemp("", "outpost-e2e-bin")
	if err != nil {
		panic(err)
	}
	binDir = dir
	for _, b := range []struct{ out, pkg string }{
		{"outpost", "github.com/outpost-dev/outpost/services/outpost/cmd/outpost"},
		{"outpost-bridge", "github.com/outpost-dev/outpost/services/bridge/cmd/outpost-bridge"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", b.pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// eventually polls f until it returns nil.
func eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", d, err)
}

type proc struct {
	cmd *exec.Cmd
	log *syncBuffer
}

// syncBuffer is a process's output, readable while the process still writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }

func (p *proc) pid() int { return p.cmd.Process.Pid }

func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return launch(t, name, exec.Command(filepath.Join(binDir, name), args...))
}

// startIn starts a binary inside a network namespace (`ip netns exec`, which execs it: the
// process is the binary itself, signals reach it).
func startIn(t testing.TB, netns, name string, args ...string) *proc {
	t.Helper()
	return launch(t, name, exec.Command("ip", append([]string{"netns", "exec", netns, filepath.Join(binDir, name)}, args...)...))
}

// logsEnv names a directory where every process the tests start leaves its whole log.
const logsEnv = "OUTPOST_E2E_LOGS"

func launch(t testing.TB, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	buf := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	cmd.Env = append(os.Environ(), "OUTPOST_LOG_FORMAT=text")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: buf}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- %s log (tail):\n%s", name, tail(buf.String(), 40))
		}
		// OUTPOST_E2E_LOGS=dir keeps every process's whole log (the benches set it): the tail
		// above rarely holds what went wrong early in a long run
		if dir := os.Getenv(logsEnv); dir != "" {
			f := filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, cmd.Process.Pid))
			if err := os.WriteFile(f, []byte(buf.String()), 0o600); err != nil {
				t.Logf("keep the %s log: %v", name, err)
			} else {
				t.Logf("--- %s log kept in %s", name, f)
			}
		}
	})
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *proc) kill(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_, _ = p.cmd.Process.Wait()
}

// testHub is a running `outpost up`.
type testHub struct {
	dir, http, nats string
	proc            *proc
	extra           []string // more `outpost up` flags
	// client reaches the gateway (nil: http.DefaultClient); a hub in a network namespace
	// is reached through a dialer that opens its sockets there.
	client *http.Client
}

func (h *testHub) httpClient() *http.Client {
	if h.client != nil {
		return h.client
	}
	return http.DefaultClient
}

func startHub(t testing.TB, dir string, extra ...string) *testHub {
	t.Helper()
	h := &testHub{dir: dir, http: freeAddr(t), nats: freeAddr(t), extra: extra}
	h.restart(t)
	return h
}

func (h *testHub) restart(t testing.TB) {
	t.Helper()
	h.proc = start(t, "outpost", append([]string{"up", "--data", h.dir, "--http", h.http, "--nats", h.nats, "--no-local-bridge"}, h.extra...)...)
	// Generous: a hub starting beside other hubs on a loaded 2-core CI machine.
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
}

func (h *testHub) token(t testing.TB) string {
	b, err := os.ReadFile(filepath.Join(h.dir, hub.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// api calls the gateway; it returns the status code and the body.
func (h *testHub) api(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+h.http+path, r)
	req.Header.Set("Authorization", "Bearer "+h.token(t))
	resp, err := h.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (h *testHub) mustAPI(t testing.TB, method, path string, body, out any) {
	t.Helper()
	code, b := h.api(t, method, path, body)
	if code != 200 {
		t.Fatalf("%s %s: %d %s", method, path, code, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

func (h *testHub) addSite(t testing.TB, name, cidr string, auto bool) string {
	var out struct{ Token string }
	h.mustAPI(t, "POST", "/api/v1/sites", map[string]any{"name": name, "ranges": []string{cidr}, "auto_approve": auto}, &out)
	return out.Token
}

func (h *testHub) status(t testing.TB, name string) string {
	var out struct {
		Agents []struct{ Name, Status string }
	}
	h.mustAPI(t, "GET", "/api/v1/agents", nil, &out)
	for _, a := range out.Agents {
		if a.Name == name {
			return a.Status
		}
	}
	return ""
}

func (h *testHub) waitStatus(t testing.TB, name, want string) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		if got := h.status(t, name); got != want {
			return fmt.Errorf("agent %s is %q, want %q", name, got, want)
		}
		return nil
	})
}

// serviceConn connects as a hub service (as a separately run service replica would).
func (h *testHub) serviceConn(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	auth, err := hub.ServiceAuth(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+h.nats, auth, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return nc, js
}

type testBridge struct {
	name, dir string
	proc      *proc
}

func startBridge(t testing.TB, h *testHub, site, name, token string, extra ...string) *testBridge {
	t.Helper()
	b := &testBridge{name: name, dir: filepath.Join(t.TempDir(), name)}
	args := append([]string{"--hub", "nats://" + h.nats, "--site", site, "--name", name, "--token", token, "--data", b.dir}, extra...)
	b.proc = start(t, "outpost-bridge", args...)
	return b
}

func probeReq(site, kind string, params map[string]any) map[string]any {
	return map[string]any{"site": site, "kind": kind, "params": params, "timeout": "20s"}
}

var _ = context.Background
