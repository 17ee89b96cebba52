package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
	"github.com/outpost-dev/outpost/services/gateway"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

type env struct {
	base  string
	toks  *tokens.Store
	js    jetstream.JetStream
	topo  bus.Topology
	admin string
	// stop shuts the gateway down and returns what Run returned (once; later calls repeat it).
	stop func() error
}

// newEnv starts a JetStream server and a gateway; provision=false leaves the bus bare.
func newEnv(t *testing.T, provision bool) *env {
	t.Helper()
	return newEnvWith(t, provision, nil)
}

// newEnvWith is newEnv with the gateway's config and deps adjusted by opt (may be nil).
func newEnvWith(t *testing.T, provision bool, opt func(*gateway.Config, *gateway.Deps)) *env {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "gw-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("gw-test")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	topo := bus.DefaultTopology(bus.DefaultLimits())
	kvTopo := bus.Topology{KV: topo.KV}
	if provision {
		kvTopo = topo
	}
	if err := bus.Provision(ctx, js, kvTopo); err != nil {
		t.Fatal(err)
	}
	kv, _ := js.KeyValue(ctx, bus.KVTokens)
	key, _ := tokens.NewKey()
	toks, err := tokens.New(kv, key)
	if err != nil {
		t.Fatal(err)
	}
	admin, _, err := toks.Create(ctx, "admin", tokens.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	gcfg := gateway.Config{Addr: ln.Addr().String(), Version: "test"}
	gdeps := gateway.Deps{NC: nc, JS: js, Tokens: toks, Topology: topo, Listener: ln}
	if opt != nil {
		opt(&gcfg, &gdeps)
	}
	go func() { done <- gateway.Run(ctx, gcfg, gdeps) }()
	var stopped error
	once := sync.Once{}
	stop := func() error {
		once.Do(func() {
			cancel()
			stopped = <-done
		})
		return stopped
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
		nc.Close()
		srv.Shutdown()
	})
	return &env{base: "http://" + ln.Addr().String(), toks: toks, js: js, topo: topo, admin: admin, stop: stop}
}

func (e *env) get(t *testing.T, path, token string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestHealthzNeedsAProvisionedBus(t *testing.T) {
	bare := newEnv(t, false)
	resp, body := bare.get(t, "/healthz", "")
	if resp.StatusCode != 503 || !strings.Contains(string(body), "PROBES") {
		t.Fatalf("unprovisioned bus: %d %s", resp.StatusCode, body)
	}
	ready := newEnv(t, true)
	if resp, body := ready.get(t, "/healthz", ""); resp.StatusCode != 200 {
		t.Fatalf("provisioned bus: %d %s", resp.StatusCode, body)
	}
}

func TestAPIRequiresAToken(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	viewer, _, _ := e.toks.Create(ctx, "v", tokens.RoleViewer)
	revoked, tok, _ := e.toks.Create(ctx, "gone", tokens.RoleAdmin)
	if _, err := e.toks.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path, token string
		want              int
	}{
		{"no token", "/api/v1/status", "", 401},
		{"garbage token", "/api/v1/status", "opt_nope", 401},
		{"revoked token", "/api/v1/status", revoked, 401},
		{"unknown route without token", "/api/v1/nothing-here", "", 401},
		{"unknown route with token", "/api/v1/nothing-here", e.admin, 404},
		{"viewer reads status", "/api/v1/status", viewer, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get(t, c.path, c.token)
			if resp.StatusCode != c.want {
				t.Fatalf("%d, want %d: %s", resp.StatusCode, c.want, body)
			}
			if c.want >= 400 {
				if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Fatalf("content type %q", ct)
				}
				var p gateway.Problem
				if err := json.Unmarshal(body, &p); err != nil || p.Status != c.want || !strings.HasPrefix(p.Type, "https://") || p.Title == "" {
					t.Fatalf("not a problem document: %s", body)
				}
			}
		})
	}
}

func TestStatusListsStreamsConsumersAndDLQ(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	if _, err := e.js.CreateOrUpdateConsumer(ctx, bus.StreamResults, jetstream.ConsumerConfig{Durable: "discovery", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "result.discovery.>"}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := e.js.Publish(ctx, "result.discovery.dc1.echo", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.js.Publish(ctx, "dlq.test", []byte("x")); err != nil {
		t.Fatal(err)
	}
	resp, body := e.get(t, "/api/v1/status", e.admin)
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	var st gateway.Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if st.DLQ.Messages != 1 || st.Version != "test" {
		t.Fatalf("dlq/version: %+v", st)
	}
	found := false
	for _, s := range st.Streams {
		if strings.HasPrefix(s.Name, "KV_") {
			t.Fatalf("KV bucket listed as a stream: %s", s.Name)
		}
		if s.Name == bus.StreamResults {
			found = s.Messages == 3 && len(s.Consumers) == 1 && s.Consumers[0].Pending == 3
		}
	}
	if !found {
		t.Fatalf("RESULTS with its consumer lag not reported: %s", body)
	}
}

// Roles: a viewer reads but cannot approve an agent; an operator cannot create tokens; an
// admin can, and the new token works at once with its role.
func TestRoles(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	viewer, _, _ := e.toks.Create(ctx, "v", tokens.RoleViewer)
	operator, _, _ := e.toks.Create(ctx, "o", tokens.RoleOperator)
	do := func(method, path, token, body string) (int, string) {
		req, _ := http.NewRequest(method, e.base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := do("POST", "/api/v1/agents/br1/approve", viewer, ""); code != 403 {
		t.Fatalf("viewer approving: %d", code)
	}
	if code, _ := do("POST", "/api/v1/agents/br1/approve", operator, ""); code != 403 {
		t.Fatalf("operator approving: %d", code)
	}
	if code, _ := do("POST", "/api/v1/tokens", operator, `{"name":"x","role":"viewer"}`); code != 403 {
		t.Fatalf("operator creating a token: %d", code)
	}
	code, body := do("POST", "/api/v1/tokens", e.admin, `{"name":"ci","role":"viewer"}`)
	if code != 200 {
		t.Fatalf("admin creating a token: %d %s", code, body)
	}
	var created struct{ Token string }
	_ = json.Unmarshal([]byte(body), &created)
	if code, _ := do("GET", "/api/v1/status", created.Token, ""); code != 200 {
		t.Fatalf("new token: %d", code)
	}
	// Bad input names the field, nothing is written.
	for _, bad := range []string{`{"name":"x","role":"viewer","bogus":1}`, `{"name":1,"role":"viewer"}`, `{not json`, ``} {
		code, body := do("POST", "/api/v1/tokens", e.admin, bad)
		if code != 400 || !strings.Contains(body, "problem") && !strings.Contains(body, "type") {
			t.Fatalf("%q: %d %s", bad, code, body)
		}
	}
	big := `{"name":"` + strings.Repeat("x", 2<<20) + `","role":"viewer"}`
	if code, body := do("POST", "/api/v1/tokens", e.admin, big); code != 400 || !strings.Contains(body, "larger") {
		t.Fatalf("oversize body: %d %.200s", code, body)
	}
	list, _ := e.toks.List(ctx)
	if len(list) != 4 {
		t.Fatalf("bad requests wrote tokens: %d tokens", len(list))
	}
}

// Every write is an audit event on the bus, listable by a viewer.
func TestAuditEvents(t *testing.T) {
	e := newEnv(t, true)
	req, _ := http.NewRequest("POST", e.base+"/api/v1/tokens", strings.NewReader(`{"name":"ci","role":"viewer"}`))
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("create token: %v %v", resp, err)
	}
	resp.Body.Close()
	var out struct {
		Events []struct{ Actor, Action, Target string }
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		_, body := e.get(t, "/api/v1/audit", e.admin)
		_ = json.Unmarshal(body, &out)
		if len(out.Events) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(out.Events) != 1 || out.Events[0].Actor != "admin" || out.Events[0].Action != "token_create" || out.Events[0].Target != "/api/v1/tokens" {
		t.Fatalf("audit: %+v", out.Events)
	}
}

// The probe kinds are served from their contracts: the table, and one kind with its params
// schema; an unknown kind is a 404 that says where the list is.
func TestProbeKinds(t *testing.T) {
	e := newEnv(t, true)
	resp, body := e.get(t, "/api/v1/probe-kinds", e.admin)
	var list gatewayapi.ProbeKindList
	if err := json.Unmarshal(body, &list); resp.StatusCode != 200 || err != nil || len(list.Items) != len(catalog.All()) || len(list.Codes) == 0 {
		t.Fatalf("%d %v: %s", resp.StatusCode, err, body)
	}
	resp, body = e.get(t, "/api/v1/probe-kinds/http_request", e.admin)
	var k gatewayapi.ProbeKind
	if err := json.Unmarshal(body, &k); resp.StatusCode != 200 || err != nil || k.Capability != "http" || len(k.CredentialTypes) != 1 || k.CredentialTypes[0] != "http" {
		t.Fatalf("%d %v: %s", resp.StatusCode, err, body)
	}
	var sch struct {
		Properties map[string]struct{ Type string } `json:"properties"`
	}
	if err := json.Unmarshal(k.Params, &sch); err != nil || sch.Properties["method"].Type != "string" {
		t.Errorf("params schema: %v %s", err, k.Params)
	}
	if resp, body := e.get(t, "/api/v1/probe-kinds/nope", e.admin); resp.StatusCode != 404 || !strings.Contains(string(body), "GET /api/v1/probe-kinds lists them") {
		t.Errorf("unknown kind: %d %s", resp.StatusCode, body)
	}
}
