package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/services/outpost/cli"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startHub(t *testing.T) hub.Config {
	t.Helper()
	cfg := hub.DefaultConfig()
	cfg.DataDir, cfg.HTTPAddr, cfg.NATSAddr = t.TempDir(), freeAddr(t), freeAddr(t)
	cfg.Out = &bytes.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; ; i++ {
		if resp, err := http.Get("http://" + cfg.HTTPAddr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return cfg
			}
		}
		if i > 500 {
			t.Fatal("hub not healthy")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	t.Setenv("OUTPOST_TOKEN", "")
	t.Setenv("OUTPOST_SERVER", "")
	code := cli.Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestStatusAgainstARunningHub(t *testing.T) {
	cfg := startHub(t)
	server := "http://" + cfg.HTTPAddr
	code, out, errs := run(t, "--server", server, "--data", cfg.DataDir, "status", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var st struct {
		Streams []struct{ Name string } `json:"streams"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Streams) < 7 {
		t.Fatalf("status json: %v %s", err, out)
	}
	code, out, _ = run(t, "--server", server, "--data", cfg.DataDir, "status")
	if code != 0 || !strings.Contains(out, "RESULTS") || !strings.Contains(out, "DLQ") {
		t.Fatalf("table: %d %s", code, out)
	}
	// No token at all (an empty data dir has none): 401 with a hint, exit 1.
	code, _, errs = run(t, "--server", server, "--data", t.TempDir(), "status")
	if code != 1 || !strings.Contains(errs, "--token") {
		t.Fatalf("no token: exit %d, %q", code, errs)
	}
	// A token from the environment works too.
	tok, _ := readToken(cfg.DataDir)
	t.Setenv("OUTPOST_TOKEN", tok)
	var out2, errb bytes.Buffer
	if code := cli.Main([]string{"--server", server, "--data", t.TempDir(), "status", "-o", "json"}, &out2, &errb); code != 0 {
		t.Fatalf("env token: %d %s", code, errb.String())
	}
}

func readToken(dir string) (string, error) {
	b, err := readFile(filepath.Join(dir, hub.AdminTokenFile))
	return strings.TrimSpace(string(b)), err
}

func TestHelpfulErrorsAndExitCodes(t *testing.T) {
	code, _, errs := run(t, "--server", "http://"+freeAddr(t), "--token", "x", "status")
	if code != 1 || !strings.Contains(errs, "is `outpost up` running?") {
		t.Fatalf("unreachable: exit %d %q", code, errs)
	}
	if code, _, _ := run(t, "status", "-o", "yaml"); code != 2 {
		t.Fatalf("bad -o: exit %d", code)
	}
	if code, _, _ := run(t, "frobnicate"); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	if code, _, _ := run(t, "status", "--nope"); code != 2 {
		t.Fatalf("unknown flag: exit %d", code)
	}
	code, out, _ := run(t, "version", "-o", "json")
	if code != 0 || !strings.Contains(out, `"version"`) {
		t.Fatalf("version: %d %s", code, out)
	}
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }
