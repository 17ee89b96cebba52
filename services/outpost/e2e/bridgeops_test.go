package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A site administrator installs the bridge (here into a staging root: the test leaves no
// user, unit or files on the machine), starts it from the installed configuration with the
// token from the secrets file, and `outpost-bridge status` reads its health from the data
// dir without the hub: connected and running, then disconnected when the hub goes away,
// then stopped.
func TestInstalledBridgeAndLocalStatus(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "dc1", "127.0.0.0/8", true)
	root := t.TempDir()
	bin := filepath.Join(binDir, "outpost-bridge")
	install := exec.Command(bin, "service", "install", "--root", root, "--hub", "nats://"+h.nats, "--site", "dc1", "--name", "br-inst",
		"--apps", "orchestration")
	install.Env = append(os.Environ(), "OUTPOST_BRIDGE_TOKEN="+tok)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	if out, _ := os.ReadFile(filepath.Join(root, "etc/outpost-bridge/bridge.yaml")); strings.Contains(string(out), tok) {
		t.Fatal("the token is in the configuration file")
	}
	// The installed configuration names /var/lib/outpost-bridge; the staging root moves it.
	env, err := os.ReadFile(filepath.Join(root, "etc/outpost-bridge/bridge.env"))
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(root, "var/lib/outpost-bridge")
	cmd := exec.Command(bin, "--config", filepath.Join(root, "etc/outpost-bridge/bridge.yaml"), "--data", data)
	cmd.Env = append(os.Environ(), strings.TrimSpace(string(env)), "OUTPOST_LOG_FORMAT=text")
	buf := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	h.waitStatus(t, "br-inst", "up")

	status := func() (string, int) {
		out, err := exec.Command(bin, "status", "--data", data).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		// one space between words, whatever the columns' widths
		return strings.Join(strings.Fields(string(out)), " "), code
	}
	eventually(t, 60*time.Second, func() error {
		out, code := status()
		if code != 0 || !strings.Contains(out, "phase running") || !strings.Contains(out, "apps orchestration") ||
			!strings.Contains(out, "connected to") || !strings.Contains(out, "health ok") {
			return fmt.Errorf("status %d:\n%s", code, out)
		}
		return nil
	})
	h.proc.kill(t)
	eventually(t, 30*time.Second, func() error {
		out, code := status()
		if code != 1 || !strings.Contains(out, "not connected to the hub") {
			return fmt.Errorf("status %d:\n%s", code, out)
		}
		return nil
	})
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	out, code := status()
	if code != 1 || !strings.Contains(out, "phase stopped") || !strings.Contains(out, "the bridge is stopped") {
		t.Fatalf("after stop: %d\n%s\nbridge log:\n%s", code, out, tail(buf.String(), 20))
	}
}
