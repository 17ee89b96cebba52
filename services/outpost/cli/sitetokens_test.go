package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Enrollment tokens from the command line: made with a TTL and a use limit, listed without
// their secrets, revoked; every change is in the audit trail.
func TestSiteTokenCommands(t *testing.T) {
	cfg := startHub(t)
	base := []string{"--server", "http://" + cfg.HTTPAddr, "--data", cfg.DataDir}
	cmd := func(args ...string) (int, string, string) {
		return run(t, append(append([]string{}, base...), args...)...)
	}
	type info struct {
		ID       string    `json:"id"`
		Site     string    `json:"site"`
		Created  time.Time `json:"created"`
		Expires  time.Time `json:"expires"`
		MaxUses  int       `json:"max_uses"`
		UsesLeft *int      `json:"uses_left"`
		State    string    `json:"state"`
		Auto     bool      `json:"auto_approve"`
	}
	code, out, errs := cmd("site", "add", "s1", "--range", "127.0.5.0/24", "--token-ttl", "2h", "--token-uses", "1", "-o", "json")
	var added struct {
		Token     string `json:"token"`
		TokenInfo info   `json:"token_info"`
	}
	if err := json.Unmarshal([]byte(out), &added); code != 0 || err != nil {
		t.Fatalf("site add: exit %d %v %s %s", code, err, out, errs)
	}
	if ti := added.TokenInfo; ti.Expires.Sub(ti.Created) != 2*time.Hour || ti.MaxUses != 1 || !strings.HasPrefix(added.Token, "ope_s1_") {
		t.Fatalf("site add token: %+v", ti)
	}
	code, out, errs = cmd("site", "tokens", "add", "s1", "--ttl", "30m", "--uses", "3", "--auto-approve")
	if code != 0 || !strings.Contains(out, "shown once") || !strings.Contains(out, "ope_s1_") || !strings.Contains(out, "enrolls 3 bridge(s)") {
		t.Fatalf("site tokens add: exit %d %s %s", code, out, errs)
	}
	secret := strings.TrimSpace(strings.Split(out, "\n")[1])
	for _, bad := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"site", "tokens", "add", "nope"}, 1, "site add nope"},
		{[]string{"site", "tokens", "add", "s1", "--ttl", "0s"}, 2, "--ttl"},
		{[]string{"site", "tokens", "add", "s1", "--uses", "-1"}, 2, "--uses"},
		{[]string{"site", "add", "s2", "--range", "127.0.6.0/24", "--token-ttl", "-1h"}, 2, "--token-ttl"},
		{[]string{"site", "tokens", "revoke", "0123456789ab"}, 1, "site tokens ls"},
		{[]string{"agents", "forget", "s1/nobody"}, 1, "no agent"},
	} {
		if code, _, errs := cmd(bad.args...); code != bad.code || !strings.Contains(errs, bad.want) {
			t.Errorf("%v: exit %d (want %d), %q does not say %q", bad.args, code, bad.code, errs, bad.want)
		}
	}
	code, out, _ = cmd("site", "tokens", "ls", "s1", "-o", "json")
	var list struct {
		Tokens []info `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list.Tokens) != 2 {
		t.Fatalf("site tokens ls s1: exit %d %v %s", code, err, out)
	}
	if strings.Contains(out, added.Token) || strings.Contains(out, secret) {
		t.Fatal("site tokens ls shows a secret")
	}
	if l := list.Tokens[1]; l.Site != "s1" || l.UsesLeft == nil || *l.UsesLeft != 3 || !l.Auto || l.State != "active" {
		t.Fatalf("second token listed as %+v", l)
	}
	code, out, errs = cmd("site", "tokens", "revoke", added.TokenInfo.ID)
	if code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: exit %d %s %s", code, out, errs)
	}
	code, out, _ = cmd("site", "tokens", "ls")
	if code != 0 || !strings.Contains(out, "USES LEFT") || !strings.Contains(out, "local") {
		t.Fatalf("site tokens ls table: exit %d\n%s", code, out)
	}
	var revokedLine string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, added.TokenInfo.ID) {
			revokedLine = l
		}
	}
	if !strings.HasSuffix(strings.TrimSpace(revokedLine), "revoked") {
		t.Fatalf("revoked token listed as %q", revokedLine)
	}
	// Creation and revocation are audited (the secret is not).
	code, out, _ = cmd("audit", "ls", "-o", "json")
	if code != 0 || strings.Contains(out, secret) || strings.Contains(out, added.Token) {
		t.Fatalf("audit ls: exit %d, or a secret in the audit trail", code)
	}
	for _, action := range []string{`"site_add"`, `"site_token_add"`, `"site_token_revoke"`} {
		if !strings.Contains(out, action) {
			t.Errorf("audit trail lacks %s: %s", action, out)
		}
	}
}
