package hub_test

import (
	"context"
	"errors"
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

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/services/agents"
	"github.com/outpost-dev/outpost/services/bridge"
	"github.com/outpost-dev/outpost/services/bridge/probe/kinds"
	"github.com/outpost-dev/outpost/services/cmdb"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

func TestCredsFile(t *testing.T) {
	dir := t.TempDir()
	sec, err := hub.NewSecrets()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hub.creds")
	if err := hub.WriteCredsFile(path, sec); err != nil {
		t.Fatal(err)
	}
	if err := hub.WriteCredsFile(path, sec); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second write: %v, want a refusal", err)
	}
	got, err := hub.ReadCredsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := sec.Callout.PublicKey()
	gp, _ := got.Callout.PublicKey()
	if got.HubPassword != sec.HubPassword || got.AdminToken != sec.AdminToken || cp != gp || string(got.TokenKey) != string(sec.TokenKey) ||
		string(got.CredKey) != string(sec.CredKey) {
		t.Errorf("read back differs")
	}
	if sec.Release == nil || got.Release == nil || got.Release.Public() != sec.Release.Public() {
		t.Errorf("release key read back: %v, want the one written", got.Release)
	}
	tests := []struct {
		name, text string
		mode       os.FileMode
		want       []string
	}{
		{"readable by others", "hub_password: x\n", 0o644, []string{"readable by group or others", "0644"}},
		{"fields missing", "# nothing\nhub_password: x\n", 0o600, []string{"admin_token is missing", "callout_seed is missing", "token_key is missing"}},
		{"bad key", "hub_password: x\nadmin_token: y\ncallout_seed: SAXX\ncurve_seed: SXXX\ntoken_key: AAAA\ncredential_key: AAAA\n", 0o600,
			[]string{"callout_seed is not a key seed", "token_key is not 32 bytes"}},
		{"not name: value", "hub_password x\n", 0o600, []string{":1: want"}},
		{"bad release seed", "hub_password: x\nadmin_token: y\nrelease_seed: AAAA\n", 0o600, []string{"release_seed is not a base64 ed25519 seed"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c")
			if err := os.WriteFile(p, []byte(tc.text), tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := hub.ReadCredsFile(p)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestServeConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  hub.ServeConfig
		want []string
	}{
		{"empty", hub.ServeConfig{}, []string{"name the services", "--nats-url is empty", "--data is empty"}},
		{"unknown service", hub.ServeConfig{Services: []string{"gateway", "lab"}, NATSURL: "nats://127.0.0.1:4222", DataDir: "x"}, []string{`service "lab"`}},
		{"bad url and replicas", hub.ServeConfig{Services: []string{"all"}, NATSURL: "http://x", DataDir: "x", Replicas: 9}, []string{"scheme", "--replicas 9"}},
		{"bad metrics address", hub.ServeConfig{Services: []string{"all"}, NATSURL: "nats://127.0.0.1:4222", DataDir: "x", MetricsAddr: "9464"}, []string{`--metrics "9464"`}},
		{"metrics off", hub.ServeConfig{Services: []string{"all"}, NATSURL: "nats://127.0.0.1:4222", DataDir: "x", MetricsAddr: hub.MetricsOff}, nil},
		{"ok", hub.ServeConfig{Services: []string{"all"}, NATSURL: "nats://127.0.0.1:4222,nats://127.0.0.1:4223", DataDir: "x"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != (tc.want == nil) {
				t.Fatalf("Validate: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
		})
	}
}

// TestServeReplicasOnOneServer runs the hub's services as two `outpost serve` processes (each
// its own data dir, one credentials file) against a NATS server with the hub's accounts and
// auth callout: both gateways serve, both write the same admin token, which works on both;
// with one process stopped the other still answers.
func TestServeReplicasOnOneServer(t *testing.T) {
	dir := t.TempDir()
	sec, err := hub.NewSecrets()
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "hub.creds")
	if err := hub.WriteCredsFile(creds, sec); err != nil {
		t.Fatal(err)
	}
	issuer, _ := sec.Callout.PublicKey()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "ext", StoreDir: t.TempDir(), Listen: "127.0.0.1:-1",
		Configure: func(o *server.Options) error {
			return bus.ApplyAccounts(o, bus.AccountVars{HubPassword: sec.HubPassword, SysPassword: sec.SysPassword, CalloutIssuer: issuer})
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	type proc struct {
		http, data, metrics string
		cancel              context.CancelFunc
		done                chan error
	}
	var procs []*proc
	for i := range 2 {
		p := &proc{http: freeAddr(t), data: filepath.Join(dir, "s"+string(rune('1'+i))), done: make(chan error, 1)}
		cfg := hub.ServeConfig{Services: []string{"gateway", "agents", "cmdb", "discovery", "dlq"}, NATSURL: srv.ClientURL(), CredsFile: creds,
			DataDir: p.data, HTTPAddr: p.http}
		if i == 0 {
			// the first on an address given; the second on the default: a free loopback
			// port it writes to <data>/metrics.addr
			p.metrics = freeAddr(t)
			cfg.MetricsAddr = p.metrics
		}
		ctx, cancel := context.WithCancel(context.Background())
		p.cancel = cancel
		go func() { p.done <- hub.Serve(ctx, cfg, slog.New(slog.DiscardHandler)) }()
		procs = append(procs, p)
	}
	stop := func(p *proc) {
		p.cancel()
		select {
		case err := <-p.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	}
	defer func() {
		for _, p := range procs[1:] {
			stop(p)
		}
	}()
	get := func(p *proc, path, token string) (int, error) {
		req, _ := http.NewRequest("GET", "http://"+p.http+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for _, p := range procs {
		deadline := time.Now().Add(60 * time.Second)
		for {
			code, err := get(p, "/healthz", "")
			if err == nil && code == 200 {
				break
			}
			select {
			case err := <-p.done:
				t.Fatalf("serve %s exited: %v", p.data, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: healthz %d %v", p.http, code, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var tokens []string
	for _, p := range procs {
		b, err := os.ReadFile(filepath.Join(p.data, hub.AdminTokenFile))
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, strings.TrimSpace(string(b)))
	}
	if tokens[0] != tokens[1] || tokens[0] != sec.AdminToken {
		t.Fatalf("admin tokens differ between replicas")
	}
	for _, p := range procs {
		if code, err := get(p, "/api/v1/discovery/runs", tokens[0]); err != nil || code != 200 {
			t.Errorf("%s: runs with the admin token: %d %v", p.http, code, err)
		}
		if code, _ := get(p, "/api/v1/discovery/runs", "opt_wrong"); code != 401 {
			t.Errorf("%s: a wrong token got %d", p.http, code)
		}
	}
	checkServeMetrics(t, procs[0].data, procs[0].metrics)
	checkServeMetrics(t, procs[1].data, "")
	checkReleaseKey(t, srv, sec)

	// one process gone: the other's services take over (discovery's lease moves to it)
	stop(procs[0])
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, err := get(procs[1], "/api/v1/discovery/runs", tokens[0])
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after one replica stopped: %d %v", code, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkServeMetrics scrapes a serve process's operations port (want: the address it was
// given; "": the one it wrote to <data>/metrics.addr) and checks the series an operator
// relies on: the process's CPU, its services up, the lag of the consumers they share.
func checkServeMetrics(t *testing.T, data, want string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, hub.MetricsAddrFile))
	if err != nil {
		t.Fatalf("metrics address file: %v", err)
	}
	addr := strings.TrimSpace(string(b))
	if want != "" && addr != want {
		t.Errorf("%s says %s, the process was given %s", hub.MetricsAddrFile, addr, want)
	}
	if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
		t.Errorf("metrics on %q: want a loopback address (%v)", addr, err)
	}
	wantLines := []string{
		"process_cpu_seconds_total ",
		`outpost_serve_service_up{service="discovery"} 1`,
		`outpost_serve_service_up{service="cmdb"} 1`,
		`outpost_serve_consumer_pending_messages{consumer="discovery-results",service="discovery",stream="RESULTS"} `,
		`outpost_serve_consumer_pending_messages{consumer="` + cmdb.ConsumerName(0) + `",service="cmdb",stream="CMDB"} `,
		"outpost_serve_metrics_query_errors 0",
	}
	var body string
	deadline := time.Now().Add(60 * time.Second)
	for {
		body, err = httpGet("http://" + addr + "/metrics")
		missing := []string{}
		for _, w := range wantLines {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if err == nil && len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrape %s: %v; missing %q in:\n%s", addr, err, missing, grepLines(body, "outpost_serve"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if h, err := httpGet("http://" + addr + "/healthz"); err != nil || !strings.HasPrefix(h, "ok") {
		t.Errorf("healthz on the metrics port: %q %v", h, err)
	}
}

func httpGet(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), err
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// checkReleaseKey enrolls a bridge with the services of serve processes: the release key it
// pins is the one of the hub's credentials file (every replica names the same one).
func checkReleaseKey(t *testing.T, srv *bus.Server, sec hub.Secrets) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := nats.Connect(srv.ClientURL(), sec.NATSAuth())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var site agents.SiteAddReply
	if err := bus.Request(ctx, nc, "agents", "site_add", agents.SiteAddRequest{Name: "dc1", Ranges: []string{"127.77.0.0/24"}, AutoApprove: true}, &site); err != nil {
		t.Fatalf("site add: %v", err)
	}
	bc := bridge.DefaultConfig()
	bc.Hub, bc.Site, bc.Name, bc.Token, bc.DataDir = srv.ClientURL(), "dc1", "br-1", site.Token, filepath.Join(t.TempDir(), "bridge")
	bc.Version = "0.0.0-test"
	bctx, bstop := context.WithCancel(ctx)
	bdone := make(chan error, 1)
	go func() {
		bdone <- bridge.Run(bctx, bc, bridge.Deps{Kinds: kinds.All(), Logger: slog.New(slog.DiscardHandler)})
	}()
	defer func() { bstop(); <-bdone }()
	pub := filepath.Join(bc.DataDir, "release.pub")
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, err := os.ReadFile(pub)
		if err == nil && strings.TrimSpace(string(b)) == sec.Release.Public() {
			return
		}
		if err == nil && len(strings.TrimSpace(string(b))) > 0 {
			t.Fatalf("the bridge pinned release key %q, the credentials file holds %q", strings.TrimSpace(string(b)), sec.Release.Public())
		}
		select {
		case err := <-bdone:
			t.Fatalf("bridge exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bridge pinned no release key within 90 s (%s: %v)", pub, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
