package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/services/gateway"
	"github.com/outpost-dev/outpost/services/gateway/console"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// env is a real gateway (with its console) on an embedded JetStream server. No hub service
// runs: what the console shows of them is the API's answer that they do not respond.
type env struct {
	base          string
	admin, viewer string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "console-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("console-test")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	topo := bus.DefaultTopology(bus.DefaultLimits())
	if err := bus.Provision(ctx, js, topo); err != nil {
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
	viewer, _, err := toks.Create(ctx, "viewer", tokens.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- gateway.Run(ctx, gateway.Config{Addr: ln.Addr().String(), Version: "test"},
			gateway.Deps{NC: nc, JS: js, Tokens: toks, Topology: topo, Listener: ln})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		nc.Close()
		srv.Shutdown()
	})
	return &env{base: "http://" + ln.Addr().String(), admin: admin, viewer: viewer}
}

// browser is an HTTP client that keeps cookies, does not follow redirects and sends the
// Origin a browser sends on a form post.
type browser struct {
	t      *testing.T
	e      *env
	c      *http.Client
	origin string
}

func (e *env) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, e: e, origin: e.base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (b *browser) get(path string) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest("GET", b.e.base+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest("POST", b.e.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	return b.do(req)
}

func (b *browser) signIn(token string) {
	b.t.Helper()
	resp, body := b.post("/console/signin", url.Values{"token": {token}})
	if resp.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("sign in: %d %s", resp.StatusCode, body)
	}
}

func TestUnauthenticatedPagesGoToSignIn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser(t)
	for _, c := range []struct{ path, want string }{
		{"/", "/console/"},
		{"/console", "/console/"},
		{"/console/", "/console/signin"},
		{"/console/agents", "/console/signin?next=%2Fconsole%2Fagents"},
		{"/console/cis?class=server", "/console/signin?next=%2Fconsole%2Fcis%3Fclass%3Dserver"},
	} {
		resp, _ := b.get(c.path)
		if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != c.want {
			t.Errorf("%s: %d to %q, want a redirect to %q", c.path, resp.StatusCode, resp.Header.Get("Location"), c.want)
		}
	}
	resp, body := b.get("/console/signin")
	if resp.StatusCode != 200 || !strings.Contains(body, `name="token"`) || !strings.Contains(body, `type="password"`) {
		t.Fatalf("sign-in form: %d %s", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("no CSP: %q", csp)
	}
	// The API is untouched by the console: it still answers problems, not pages.
	resp, body = b.get("/api/v1/agents")
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("Content-Type"), "problem+json") {
		t.Fatalf("API without token: %d %s", resp.StatusCode, body)
	}
	if resp, _ := b.get("/healthz"); resp.StatusCode != 200 {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	if resp, body := b.get("/console/static/console.css"); resp.StatusCode != 200 || !strings.Contains(body, "--accent") {
		t.Fatalf("stylesheet: %d", resp.StatusCode)
	}
}

func TestSignIn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser(t)
	resp, body := b.post("/console/signin", url.Values{"token": {"opt_not-a-token"}})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "unknown or revoked") {
		t.Fatalf("bad token: %d %s", resp.StatusCode, body)
	}
	if len(resp.Cookies()) != 0 {
		t.Fatalf("bad token set cookies: %v", resp.Cookies())
	}
	if resp, body := b.post("/console/signin", url.Values{"token": {"  "}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "admin.token") {
		t.Fatalf("empty token: %d %s", resp.StatusCode, body)
	}

	resp, body = b.post("/console/signin", url.Values{"token": {e.admin + "\n"}, "next": {"/console/agents"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/agents" {
		t.Fatalf("good token: %d %s", resp.StatusCode, body)
	}
	var sess *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == console.SessionCookie {
			sess = c
		}
	}
	// The cookie names a server-side session; it never carries the token.
	if sess == nil || sess.Value == "" || strings.Contains(sess.Value, e.admin) || sess.MaxAge <= 0 || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Path != "/" || sess.Secure {
		t.Fatalf("session cookie: %+v", sess)
	}
	resp, body = b.get("/console/")
	if resp.StatusCode != 200 || !strings.Contains(body, "Dashboard") || !strings.Contains(body, "Sign out") {
		t.Fatalf("dashboard: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(body, e.admin) {
		t.Fatal("the page shows the session token")
	}
	// An open redirect is not offered to a crafted sign-in link.
	for _, next := range []string{"https://evil.example/", "//evil.example/x", "/api/v1/tokens", `/\evil.example`} {
		resp, _ := b.post("/console/signin", url.Values{"token": {e.admin}, "next": {next}})
		if loc := resp.Header.Get("Location"); loc != "/console/" {
			t.Errorf("next %q: redirected to %q", next, loc)
		}
	}

	resp, _ = b.post("/console/signout", nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d", resp.StatusCode)
	}
	if resp, _ := b.get("/console/"); resp.Header.Get("Location") != "/console/signin" {
		t.Fatalf("after sign-out: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// A revoked token signs the browser out on its next page.
func TestRevokedSessionSignsOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser(t)
	b.signIn(e.admin)
	// Revoke the token through the API itself.
	req, _ := http.NewRequest("GET", e.base+"/api/v1/tokens", nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, body := b.do(req)
	var list struct{ Tokens []struct{ ID, Name string } }
	if err := json.Unmarshal([]byte(body), &list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("tokens: %d %s", resp.StatusCode, body)
	}
	for _, tok := range list.Tokens {
		if tok.Name == "admin" {
			req, _ = http.NewRequest("DELETE", e.base+"/api/v1/tokens/"+tok.ID, nil)
			req.Header.Set("Authorization", "Bearer "+e.admin)
			if resp, body := b.do(req); resp.StatusCode != 200 {
				t.Fatalf("revoke: %d %s", resp.StatusCode, body)
			}
		}
	}
	resp, _ = b.get("/console/agents")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/console/signin") {
		t.Fatalf("revoked session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// Every write must come from a page of the console's own host.
func TestCrossSiteWritesAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser(t)
	b.signIn(e.admin)
	cases := []struct {
		name    string
		headers map[string]string
	}{
		{"no origin nor referer", nil},
		{"other origin", map[string]string{"Origin": "http://evil.example"}},
		{"other port", map[string]string{"Origin": "http://127.0.0.1:1"}},
		{"null origin, other referer", map[string]string{"Origin": "null", "Referer": "http://evil.example/form"}},
		{"cross-site fetch", map[string]string{"Origin": e.base, "Sec-Fetch-Site": "cross-site"}},
	}
	for _, path := range []string{"/console/agents/lab:br1/approve", "/console/signin", "/console/sites", "/console/signout"} {
		for _, c := range cases {
			req, _ := http.NewRequest("POST", e.base+path, strings.NewReader("token="+e.admin+"&name=x&ranges=10.0.0.0/24"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for k, v := range c.headers {
				req.Header.Set(k, v)
			}
			resp, body := b.do(req)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "not sent from this console") {
				t.Errorf("%s %s: %d", path, c.name, resp.StatusCode)
			}
		}
	}
	// The same origin, or a same-origin Referer when there is no Origin, passes the check.
	req, _ := http.NewRequest("POST", e.base+"/console/signout", nil)
	req.Header.Set("Referer", e.base+"/console/agents")
	if resp, _ := b.do(req); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("same-origin referer: %d", resp.StatusCode)
	}
}

// The API decides what a role may do; the console shows its refusal.
func TestViewerIsRefusedWithTheAPIsMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser(t)
	b.signIn(e.viewer)
	for _, c := range []struct {
		path string
		form url.Values
	}{
		{"/console/agents/lab:br1/approve", nil},
		{"/console/agents/lab:br1/drain", nil},
		{"/console/sites", url.Values{"name": {"dc9"}, "ranges": {"10.9.0.0/16"}}},
		{"/console/credentials", url.Values{"name": {"c1"}, "type": {"ssh"}, "site": {"dc9"}, "secret": {"hunter2-secret"}}},
		{"/console/discovery", url.Values{"site": {"dc9"}}},
	} {
		resp, body := b.post(c.path, c.form)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Role not allowed") || !strings.Contains(body, "the token has role viewer") {
			t.Errorf("%s: %d %s", c.path, resp.StatusCode, body)
		}
		if strings.Contains(body, "hunter2-secret") {
			t.Errorf("%s: the refused form echoes the secret", c.path)
		}
	}
}

// Pages render when services do not answer, with the API's reason on the page.
func TestPagesRenderWhatTheAPISays(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser(t)
	b.signIn(e.admin)
	for _, path := range []string{"/console/", "/console/agents", "/console/sites", "/console/discovery", "/console/cis", "/console/imports"} {
		resp, body := b.get(path)
		if resp.StatusCode != 200 || !strings.Contains(body, `class="problem"`) || !strings.Contains(body, `<nav class="side"`) {
			t.Errorf("%s: %d %.300s", path, resp.StatusCode, body)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s: Cache-Control %q", path, cc)
		}
	}
	// The DLQ is read by the gateway itself, which needs no service.
	if resp, body := b.get("/console/dlq"); resp.StatusCode != 200 || !strings.Contains(body, "dead letters") {
		t.Errorf("dlq page: %d %s", resp.StatusCode, body)
	}
	if resp, _ := b.get("/console/no-such-page"); resp.StatusCode != 404 {
		t.Errorf("unknown page: %d", resp.StatusCode)
	}
}

// Pages offer only what the signed-in role may do, and say who is signed in.
func TestPagesOfferWhatTheRoleMayDo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	forms := map[string]string{
		"/console/sites":     `action="/console/sites"`,
		"/console/discovery": `action="/console/discovery"`,
	}
	for _, c := range []struct {
		token, role string
		offered     bool
	}{{e.viewer, "viewer", false}, {e.admin, "admin", true}} {
		b := e.browser(t)
		b.signIn(c.token)
		for path, form := range forms {
			_, body := b.get(path)
			if strings.Contains(body, form) != c.offered {
				t.Errorf("%s as %s: form offered %v, want %v", path, c.role, !c.offered, c.offered)
			}
			if !strings.Contains(body, "· "+c.role) {
				t.Errorf("%s as %s: the page does not say who is signed in", path, c.role)
			}
		}
	}
}
