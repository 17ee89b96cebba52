package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/services/gateway"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type running struct {
	cfg    hub.Config
	cancel context.CancelFunc
	done   chan error
	out    *bytes.Buffer
}

func start(t *testing.T, dir string) *running {
	t.Helper()
	return startWith(t, dir, nil)
}

// startWith starts a hub on free loopback ports with its config adjusted by opt (may be nil).
func startWith(t *testing.T, dir string, opt func(*hub.Config)) *running {
	t.Helper()
	cfg := hub.DefaultConfig()
	cfg.DataDir, cfg.HTTPAddr, cfg.NATSAddr = dir, freeAddr(t), freeAddr(t)
	if opt != nil {
		opt(&cfg)
	}
	out := &bytes.Buffer{}
	cfg.Out = out
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cfg: cfg, cancel: cancel, done: make(chan error, 1), out: out}
	go func() { r.done <- hub.Run(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + cfg.HTTPAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-r.done:
			t.Fatalf("hub exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("healthz not 200 in 15 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("hub stopped with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("hub did not stop within 10 s")
	}
}

func (r *running) token(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(r.cfg.DataDir, hub.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (r *running) status(t *testing.T) gateway.Status {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+r.cfg.HTTPAddr+"/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+r.token(t))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var st gateway.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func (r *running) post(t *testing.T, path, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+r.cfg.HTTPAddr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+r.token(t))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
	}
	return string(b)
}

func counts(st gateway.Status) map[string]uint64 {
	m := map[string]uint64{}
	for _, s := range st.Streams {
		m[s.Name] = s.Messages
	}
	return m
}

// The whole lifecycle of `outpost up`: healthy, streams provisioned, admin token written once
// with mode 0600, a bridge can publish on the client port, clean stop, and a restart on the
// same data dir keeps the data and the token.
func TestUpLifecycle(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	fi, err := os.Stat(filepath.Join(dir, hub.AdminTokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v %v", fi, err)
	}
	tok := r.token(t)
	if !strings.Contains(r.out.String(), tok) {
		t.Fatal("the admin token was not printed on first start")
	}
	st := r.status(t)
	for _, s := range []string{"PROBES", "RESULTS", "EVENTS", "CMDB", "CHANGES", "IMPORTS", "DLQ"} {
		if _, ok := counts(st)[s]; !ok {
			t.Fatalf("status lacks %s: %+v", s, st)
		}
	}
	// Work through the local bridge: ad-hoc echo probes land results in RESULTS.
	for i := range 5 {
		out := r.post(t, "/api/v1/probes", fmt.Sprintf(`{"site":"local","kind":"echo","params":{"msg":"m%d"}}`, i))
		if !strings.Contains(out, fmt.Sprintf(`"msg":"m%d"`, i)) {
			t.Fatalf("echo probe: %s", out)
		}
	}
	// A client from outside without an identity is refused: bridges need an NKey.
	if nc, err := nats.Connect("nats://"+r.cfg.NATSAddr, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("anonymous NATS connection accepted")
	}
	// A probe leaves PROBES when the bridge acks it, which it does once the hub acked its
	// result: the API may have answered with the last result a moment before. Compare the
	// streams once that ack is in.
	before := counts(r.status(t))
	for deadline := time.Now().Add(30 * time.Second); before["PROBES"] != 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		before = counts(r.status(t))
	}
	if before["PROBES"] != 0 {
		t.Fatalf("PROBES still holds %d probes whose results are in (acks lost?)", before["PROBES"])
	}
	if before["RESULTS"] != 5 {
		t.Fatalf("RESULTS = %d", before["RESULTS"])
	}
	r.stop(t)

	r2 := start(t, dir)
	defer r2.stop(t)
	if r2.token(t) != tok {
		t.Fatal("admin token changed across restart")
	}
	if strings.Contains(r2.out.String(), tok) {
		t.Fatal("the admin token was printed again")
	}
	after := counts(r2.status(t))
	for name, n := range before {
		if after[name] != n {
			t.Fatalf("%s: %d messages before restart, %d after", name, n, after[name])
		}
	}
}

func TestUpRefusesBadConfig(t *testing.T) {
	cfg := hub.DefaultConfig()
	cfg.DataDir, cfg.HTTPAddr, cfg.NATSAddr = "", "nope", "also-nope"
	cfg.DiscoveryRetention = time.Minute
	err := hub.Run(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"--data", "--http", "--nats", "--discovery-retention"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not name %s", err, want)
		}
	}
}

// A second hub on the same ports fails with a message that says what to do.
func TestUpPortInUse(t *testing.T) {
	r := start(t, t.TempDir())
	defer r.stop(t)
	cfg := r.cfg
	cfg.DataDir = t.TempDir()
	cfg.NATSAddr = freeAddr(t)
	err := hub.Run(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "--http") {
		t.Fatalf("want an error naming --http, got %v", err)
	}
}
