package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/pki"
	"github.com/outpost-dev/outpost/services/gateway"
	"github.com/outpost-dev/outpost/services/gateway/console"
)

// signIn posts a token to the console's sign-in form as a browser would and returns the
// session cookie it got.
func signIn(t *testing.T, c *http.Client, base, token string) *http.Cookie {
	t.Helper()
	req, _ := http.NewRequest("POST", base+console.Prefix+"/signin", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := noRedirect(c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == console.SessionCookie {
			return ck
		}
	}
	t.Fatal("sign in set no session cookie")
	return nil
}

func noRedirect(c *http.Client) *http.Client {
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

// page GETs a console page with a session cookie and returns the status and where it sends.
func page(t *testing.T, c *http.Client, base, path string, ck *http.Cookie) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
	resp, err := noRedirect(c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// The session cookie names a server-side session: it holds no token, expires with the
// session, and after signing out (or the session's TTL) a copy of it opens nothing.
func TestConsoleSessions(t *testing.T) {
	clk := &clock{t: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	e := newEnvWith(t, true, func(_ *gateway.Config, d *gateway.Deps) { d.Now = clk.now })
	c := http.DefaultClient
	ck := signIn(t, c, e.base, e.admin)
	if ck.Value == "" || strings.Contains(ck.Value, e.admin) || strings.Contains(e.admin, ck.Value) {
		t.Fatalf("the cookie carries the token: %q", ck.Value)
	}
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.MaxAge != int(bus.SessionTTL/time.Second) || ck.Secure {
		t.Fatalf("cookie over plain loopback HTTP: %+v", ck)
	}
	// What the sessions bucket holds is neither the token nor the cookie.
	kv, err := e.js.KeyValue(context.Background(), bus.KVSessions)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(context.Background())
	if err != nil || len(keys) != 1 {
		t.Fatalf("sessions bucket keys %v, %v", keys, err)
	}
	rec, _ := kv.Get(context.Background(), keys[0])
	for _, secret := range []string{e.admin, ck.Value} {
		if strings.Contains(keys[0], secret) || strings.Contains(string(rec.Value()), secret) {
			t.Fatalf("the sessions bucket holds a usable secret: %s %s", keys[0], rec.Value())
		}
	}
	if st, _ := page(t, c, e.base, console.Prefix+"/", ck); st != 200 {
		t.Fatalf("signed-in dashboard: %d", st)
	}

	cases := []struct {
		name string
		end  func(t *testing.T, ck *http.Cookie)
	}{
		{"signing out ends the session on the server", func(t *testing.T, ck *http.Cookie) {
			req, _ := http.NewRequest("POST", e.base+console.Prefix+"/signout", nil)
			req.Header.Set("Origin", e.base)
			req.AddCookie(ck)
			resp, err := noRedirect(c).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("sign out: %d", resp.StatusCode)
			}
		}},
		{"the session expires after its TTL", func(t *testing.T, ck *http.Cookie) { clk.add(bus.SessionTTL) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ck := signIn(t, c, e.base, e.admin)
			if st, _ := page(t, c, e.base, console.Prefix+"/agents", ck); st != 200 {
				t.Fatalf("before: %d", st)
			}
			tc.end(t, ck)
			// The browser may have dropped the cookie; a copy of it must not work either.
			if st, loc := page(t, c, e.base, console.Prefix+"/agents", ck); st != http.StatusSeeOther || !strings.HasPrefix(loc, console.Prefix+"/signin") {
				t.Fatalf("the old cookie still opens pages: %d %s", st, loc)
			}
		})
	}
	// A made-up session id opens nothing.
	if st, loc := page(t, c, e.base, console.Prefix+"/", &http.Cookie{Name: console.SessionCookie, Value: e.admin}); st != http.StatusSeeOther || loc != console.Prefix+"/signin" {
		t.Fatalf("the raw token as a cookie: %d %s", st, loc)
	}
}

// Off loopback the gateway serves HTTPS (the hub's certificate), the session cookie is
// Secure there, and plain HTTP off loopback is refused by Validate.
func TestGatewayHTTPS(t *testing.T) {
	dir := t.TempDir()
	f, err := pki.Ensure(pki.DefaultConfig(filepath.Join(dir, "tls"), []string{"127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, true, func(c *gateway.Config, _ *gateway.Deps) { c.TLSCert, c.TLSKey = f.Cert, f.Key })
	base := strings.Replace(e.base, "http://", "https://", 1)
	caPEM, _ := os.ReadFile(f.CA)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz over HTTPS: %d", resp.StatusCode)
	}
	ck := signIn(t, c, base, e.admin)
	if !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie over HTTPS: %+v", ck)
	}
	if st, _ := page(t, c, base, console.Prefix+"/", ck); st != 200 {
		t.Fatalf("dashboard over HTTPS: %d", st)
	}
	// Plain HTTP to the HTTPS port gets no page.
	if resp, err := http.Get(e.base + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered on the HTTPS port")
		}
	}

	for _, tc := range []struct {
		cfg  gateway.Config
		want string
	}{
		{gateway.Config{Addr: "0.0.0.0:8443"}, "plain HTTP is only allowed on loopback"},
		{gateway.Config{Addr: "192.0.2.1:8443", TLSCert: f.Cert}, "certificate and key go together"},
		{gateway.Config{Addr: "0.0.0.0:8443", TLSCert: f.Cert, TLSKey: f.Key}, ""},
		{gateway.Config{Addr: "localhost:8080"}, ""},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
