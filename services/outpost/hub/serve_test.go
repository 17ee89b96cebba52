package hub_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/outpost-dev/outpost/libs/bus"
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
		http, data string
		cancel     context.CancelFunc
		done       chan error
	}
	var procs []*proc
	for i := range 2 {
		p := &proc{http: freeAddr(t), data: filepath.Join(dir, "s"+string(rune('1'+i))), done: make(chan error, 1)}
		cfg := hub.ServeConfig{Services: []string{"gateway", "agents", "cmdb", "discovery", "dlq"}, NATSURL: srv.ClientURL(), CredsFile: creds,
			DataDir: p.data, HTTPAddr: p.http}
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
