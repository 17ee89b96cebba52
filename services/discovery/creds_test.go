package discovery

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/seal"
)

// TestCredentialRules: each type's fields are checked, http_request gets only http
// credentials sealed, and allow_insecure travels sealed with the credential.
func TestCredentialRules(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.234.0/24", 0)
	stop := h.startService(ctx)
	defer stop()
	add := func(r CredentialAddRequest) error {
		return bus.Request(ctx, h.nc, Service, "credentials_add", r, nil)
	}
	for _, c := range []struct {
		name string
		req  CredentialAddRequest
		want string // "" accepted
	}{
		{"http basic", CredentialAddRequest{Name: "api", Type: "http", Site: "lab", Username: "u", Secret: "api-pw-1"}, ""},
		{"http bearer", CredentialAddRequest{Name: "tok", Type: "http", Site: "lab", Secret: "tok-1", Fields: map[string]string{"scheme": "bearer"}}, ""},
		{"http header", CredentialAddRequest{Name: "key", Type: "http", Site: "lab", Secret: "key-1", Fields: map[string]string{"scheme": "header", "header_name": "X-Api-Key"}}, ""},
		{"http header without its name", CredentialAddRequest{Name: "k2", Type: "http", Site: "lab", Secret: "key-1", Fields: map[string]string{"scheme": "header"}}, "fields.header_name"},
		{"http unknown scheme", CredentialAddRequest{Name: "k3", Type: "http", Site: "lab", Secret: "key-1", Fields: map[string]string{"scheme": "digest"}}, "want basic, bearer or header"},
		{"sql plaintext without allow_insecure", CredentialAddRequest{Name: "db", Type: "sql", Site: "lab", Username: "u", Secret: "db-1", Fields: map[string]string{"tls": "none"}}, "give allow_insecure"},
		{"sql plaintext allowed", CredentialAddRequest{Name: "db2", Type: "sql", Site: "lab", Username: "u", Secret: "db-1", Fields: map[string]string{"tls": "none"}, AllowInsecure: true}, ""},
		{"ssh", CredentialAddRequest{Name: "prod-ssh", Type: "ssh", Site: "lab", Username: "root", Secret: "Sup3r-Secret-SSH-pw"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := add(c.req)
			if (err == nil) != (c.want == "") || err != nil && !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
	seal1 := func(kind string, names ...string) (SealReply, error) {
		var r SealReply
		err := bus.Request(ctx, h.nc, Service, "credentials_seal", SealRequest{Site: "lab", Kind: kind, Probe: "p1", Names: names}, &r)
		return r, err
	}
	// the review's finding #3: an SSH password must never be sealed to an http_request
	if _, err := seal1("http_request", "prod-ssh"); err == nil || !strings.Contains(err.Error(), "of type ssh; http_request takes http") {
		t.Errorf("ssh credential sealed to http_request: %v", err)
	}
	for _, kind := range []string{"ssh_exec", "sql_query", "ldap_search", "snmp_get"} {
		if _, err := seal1(kind, "api"); err == nil {
			t.Errorf("http credential sealed to %s", kind)
		}
	}
	r, err := seal1("sql_query", "db2")
	if err != nil || len(r.Secrets) != 1 {
		t.Fatalf("seal: %v %+v", err, r)
	}
	s, err := seal.Open(h.bridge.key, r.Secrets[0], "p1")
	if err != nil || !s.AllowInsecure || s.Fields["tls"] != "none" {
		t.Errorf("sealed %+v %v: want allow_insecure and the tls field", s, err)
	}
	var ls struct{ Credentials []Credential }
	h.request(ctx, "credentials_ls", struct{}{}, &ls)
	for _, c := range ls.Credentials {
		if c.AllowInsecure != (c.Name == "db2") {
			t.Errorf("%s: allow_insecure %v in the list", c.Name, c.AllowInsecure)
		}
	}
}

// TestCredentialBinding: whoever can write the credentials bucket cannot move a sealed
// secret to another site, type or user, or relax it, without the key (review #10).
func TestCredentialBinding(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.234.0/24", 0)
	stop := h.startService(ctx)
	defer stop()
	h.request(ctx, "credentials_add", CredentialAddRequest{Name: "prod-ssh", Type: "ssh", Site: "lab", Username: "root", Secret: "Sup3r-Secret-SSH-pw"}, nil)
	kv, err := h.js.KeyValue(ctx, KVCredentials)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "prod-ssh")
	if err != nil {
		t.Fatal(err)
	}
	orig := e.Value()
	for name, tamper := range map[string]func(*storedCredential){
		"type ssh → http":      func(sc *storedCredential) { sc.Type = "http" },
		"site lab → other":     func(sc *storedCredential) { sc.Site = "other" },
		"username root → svc":  func(sc *storedCredential) { sc.Username = "svc" },
		"allow_insecure added": func(sc *storedCredential) { sc.AllowInsecure = true },
		"downgraded binding":   func(sc *storedCredential) { sc.Bound = 0 },
	} {
		t.Run(name, func(t *testing.T) {
			var sc storedCredential
			if err := json.Unmarshal(orig, &sc); err != nil {
				t.Fatal(err)
			}
			tamper(&sc)
			b, _ := json.Marshal(sc)
			if _, err := kv.Put(ctx, "prod-ssh", b); err != nil {
				t.Fatal(err)
			}
			if _, err := h.svcCreds(t).named(ctx, "prod-ssh"); err == nil {
				t.Fatal("a rewritten record opened")
			}
		})
	}
	if _, err := kv.Put(ctx, "prod-ssh", orig); err != nil {
		t.Fatal(err)
	}
	if c, err := h.svcCreds(t).named(ctx, "prod-ssh"); err != nil || c.Secret != "Sup3r-Secret-SSH-pw" {
		t.Fatalf("the untouched record: %v", err)
	}
}

// svcCreds opens the credential store on the harness's data dir, as the service does.
func (h *harness) svcCreds(t *testing.T) *credStore {
	t.Helper()
	kv, err := h.js.KeyValue(context.Background(), KVCredentials)
	if err != nil {
		t.Fatal(err)
	}
	key, err := loadKey(h.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := newCredStore(kv, key, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
