package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/libs/pgserver"
)

// An ad-hoc probe names stored credentials; the hub seals them to the site's bridges for
// that probe only, and neither the answer nor the error carries a secret.
func TestAdhocProbeWithStoredCredentials(t *testing.T) {
	t.Parallel()
	const cidr = "127.77.126.0/24"
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 24, Seed: 5})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	defer l.Close()
	var linux lab.Host
	for _, h := range l.Manifest().Hosts {
		if h.Class == "linux_server" && h.Credentials.SSH != nil && !h.Hostile {
			linux = h
			break
		}
	}
	if linux.IP == "" {
		t.Fatal("the lab has no linux server")
	}
	ssh := linux.Credentials.SSH

	h := startHub(t, t.TempDir())
	// the lab, and 127.0.0.1 where the test's PostgreSQL listens
	var site struct{ Token string }
	h.mustAPI(t, "POST", "/api/v1/sites", map[string]any{"name": "lab", "ranges": []string{cidr, "127.0.0.1/32"}, "auto_approve": true}, &site)
	tok := site.Token
	startBridge(t, h, "lab", "br1", tok)
	h.waitStatus(t, "br1", "up")
	h.addSite(t, "other", "127.77.125.0/24", true)
	cred := func(name, site, typ, user, secret string) {
		h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": name, "type": typ, "site": site, "username": user, "secret": secret}, nil)
	}
	cred("wrong", "lab", "ssh", ssh.Username, "not-the-password")
	cred("right", "lab", "ssh", ssh.Username, ssh.Password)
	cred("community", "lab", "snmp", "", "public-ish")
	cred("elsewhere", "other", "ssh", ssh.Username, ssh.Password)

	probe := func(creds ...string) (int, []byte) {
		return h.api(t, "POST", "/api/v1/probes", map[string]any{"site": "lab", "kind": "ssh_exec", "target": linux.IP,
			"params": map[string]any{"commands": []string{"hostname"}}, "credentials": creds})
	}
	code, b := probe("wrong", "right")
	if code != 200 {
		t.Fatalf("probe: %d %s", code, b)
	}
	var out struct {
		Results []struct {
			Status string `json:"status"`
			Data   struct {
				Credential string   `json:"credential"`
				Failed     []string `json:"failed_credentials"`
				Outputs    []struct {
					Stdout struct{ Text string } `json:"stdout"`
				} `json:"outputs"`
			} `json:"data"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &out); err != nil || len(out.Results) != 1 {
		t.Fatalf("answer %s: %v", b, err)
	}
	r := out.Results[0]
	if r.Status != "ok" || r.Data.Credential != "right" || len(r.Data.Failed) != 1 || r.Data.Failed[0] != "wrong" ||
		len(r.Data.Outputs) != 1 || strings.TrimSpace(r.Data.Outputs[0].Stdout.Text) != linux.Name {
		t.Fatalf("want hostname %s with credential right after wrong, got %s", linux.Name, b)
	}
	if strings.Contains(string(b), ssh.Password) {
		t.Fatal("the answer carries the secret")
	}

	// sql_query against a real PostgreSQL with a stored sql credential
	if os.Getenv("OUTPOST_SKIP_PG") != "1" {
		pg, err := pgserver.Start(context.Background(), pgserver.Options{Password: "pg-secret-6142"})
		if err != nil {
			t.Fatalf("PostgreSQL (set OUTPOST_SKIP_PG=1 to skip): %v", err)
		}
		defer pg.Stop()
		// the test's PostgreSQL speaks no TLS: the admin says so on the credential
		h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": "pg", "type": "sql", "site": "lab", "username": pg.User, "secret": pg.Password,
			"allow_insecure": true, "fields": map[string]string{"tls": "none"}}, nil)
		code, b := h.api(t, "POST", "/api/v1/probes", map[string]any{"site": "lab", "kind": "sql_query", "target": pg.Host,
			"params": map[string]any{"driver": "postgres", "port": pg.Port, "query": "SELECT 41 + 1 AS answer"}, "credentials": []string{"pg"}})
		if code != 200 || !strings.Contains(string(b), `"answer"`) || !strings.Contains(string(b), `[42]`) || !strings.Contains(string(b), `"credential":"pg"`) {
			t.Errorf("sql_query through the hub: %d %s", code, b)
		}
		if strings.Contains(string(b), pg.Password) {
			t.Error("the sql_query answer carries the secret")
		}
	}

	// An operator cannot get a stored SSH secret out through http_request: refused at the
	// hub before any probe leaves, and nothing reaches the server the operator chose.
	var hits atomic.Int64
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, "%q", r.Header.Get("Authorization"))
	}))
	defer echo.Close()
	var op struct{ Token string }
	h.mustAPI(t, "POST", "/api/v1/tokens", map[string]any{"name": "ops", "role": "operator"}, &op)
	asOperator := func(body map[string]any) (int, string) {
		return asOperatorPath(t, h, op.Token, "/api/v1/probes", body)
	}
	for _, params := range []map[string]any{
		{"url": echo.URL + "/"},
		{"url": strings.Replace(echo.URL, "http://", "https://", 1) + "/", "tls": map[string]any{"insecure_skip_verify": true}},
	} {
		code, body := asOperator(map[string]any{"site": "lab", "kind": "http_request", "target": "127.0.0.1", "params": params, "credentials": []string{"right"}})
		if code != 400 || !strings.Contains(body, "of type ssh; http_request takes http") {
			t.Errorf("http_request with an ssh credential: want 400 naming the types, got %d %s", code, body)
		}
		if strings.Contains(body, ssh.Password) || strings.Contains(body, base64.StdEncoding.EncodeToString([]byte(ssh.Username+":"+ssh.Password))) {
			t.Error("the refusal carries the secret")
		}
	}
	// and an operator cannot store a credential (let alone one allowed over plaintext)
	if code, body := asOperatorPath(t, h, op.Token, "/api/v1/credentials", map[string]any{"name": "mine", "type": "http", "site": "lab", "secret": "x-secret-1", "allow_insecure": true}); code != 403 {
		t.Errorf("an operator stored a credential: %d %s", code, body)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the operator's server was reached %d times", n)
	}

	// refused before anything is sent: unknown name, wrong type for the kind, another site's
	for creds, want := range map[string]string{
		"nope":      `credential \"nope\" not found`,
		"community": "of type snmp; ssh_exec takes ssh",
		"elsewhere": "belongs to site other, not lab",
	} {
		code, b := probe(creds)
		if code != 400 || !strings.Contains(string(b), want) {
			t.Errorf("credential %s: want 400 %q, got %d %s", creds, want, code, b)
		}
	}
}

func asOperatorPath(t *testing.T, h *testHub, token, path string, body any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", "http://"+h.http+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}
