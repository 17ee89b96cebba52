package agents_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/services/agents"
)

// An enrollment token works until it expires, is used up or is revoked; then a new key
// holding it is refused both when it connects (the auth callout) and when it enrolls.
func TestEnrollmentTokenLimits(t *testing.T) {
	h := newHub(t)
	h.site(t, "other", false)
	otherTok := h.site(t, "other", false)
	type step struct {
		advance time.Duration
		revoke  bool
		enroll  int    // this many new keys enroll first, and succeed
		want    string // "" the next new key enrolls; else the refusal says this
	}
	for _, tc := range []struct {
		name string
		add  agents.TokenAddRequest
		step step
	}{
		{"fresh token", agents.TokenAddRequest{}, step{}},
		{"default ttl, a minute before expiry", agents.TokenAddRequest{}, step{advance: 24*time.Hour - time.Minute}},
		{"default ttl, at expiry", agents.TokenAddRequest{}, step{advance: 24 * time.Hour, want: "expired"}},
		{"ttl 1h, after 2h", agents.TokenAddRequest{TTL: "1h"}, step{advance: 2 * time.Hour, want: "expired"}},
		{"ttl 72h, after 48h", agents.TokenAddRequest{TTL: "72h"}, step{advance: 48 * time.Hour}},
		{"revoked", agents.TokenAddRequest{}, step{revoke: true, want: "was revoked"}},
		{"one use, unused", agents.TokenAddRequest{Uses: 1}, step{}},
		{"one use, used", agents.TokenAddRequest{Uses: 1}, step{enroll: 1, want: "has enrolled its 1 bridge(s)"}},
		{"three uses, two used", agents.TokenAddRequest{Uses: 3}, step{enroll: 2}},
		{"unlimited uses", agents.TokenAddRequest{}, step{enroll: 5}},
		{"token of another site", agents.TokenAddRequest{}, step{want: "no usable enrollment token of site token-of-another-site"}},
		{"no token", agents.TokenAddRequest{}, step{want: "no usable enrollment token"}},
		{"unknown token", agents.TokenAddRequest{}, step{want: "no usable enrollment token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			site := strings.NewReplacer(" ", "-", ",", "", "(", "", ")", "").Replace(tc.name)
			h.site(t, site, false)
			tc.add.Site = site
			var made agents.TokenAddReply
			h.mustCall(t, "site_token_add", tc.add, &made)
			tok := made.Token
			switch tc.name {
			case "token of another site":
				tok = otherTok
			case "no token":
				tok = ""
			case "unknown token":
				tok = "ope_" + site + "_not-a-token-this-hub-made"
			}
			for i := range tc.step.enroll {
				if _, err := h.enroll(t, newBridge(t), site, "b"+string(rune('a'+i)), tok); err != nil {
					t.Fatalf("enrollment %d: %v", i, err)
				}
			}
			if tc.step.revoke {
				var v agents.TokenView
				h.mustCall(t, "site_token_revoke", agents.TokenRef{ID: made.TokenInfo.ID}, &v)
			}
			h.clock.Advance(tc.step.advance)
			b := newBridge(t)
			connErr := h.connect(t, b, tok)
			reply, err := h.enroll(t, b, site, "new", tok)
			if tc.step.want == "" {
				if connErr != nil || err != nil || reply.Status != agents.StatePending {
					t.Fatalf("a usable token refused: connect %v, enroll %+v %v", connErr, reply, err)
				}
				return
			}
			if connErr == nil && tc.name != "token of another site" {
				t.Errorf("the auth callout let a new key in with this token")
			}
			if code(err) != http.StatusForbidden || !strings.Contains(err.Error(), tc.step.want) {
				t.Fatalf("enroll: want 403 saying %q, got %v", tc.step.want, err)
			}
		})
	}
}

// A known key re-registers whatever became of the token it enrolled with: bridges
// re-enroll every 30 s, and tokens expire after a day.
func TestKnownKeyOutlivesItsToken(t *testing.T) {
	h := newHub(t)
	var made agents.TokenAddReply
	h.site(t, "a", false)
	h.mustCall(t, "site_token_add", agents.TokenAddRequest{Site: "a", TTL: "1h", Uses: 1, AutoApprove: true}, &made)
	b := newBridge(t)
	if r, err := h.enroll(t, b, "a", "a1", made.Token); err != nil || r.Status != agents.StateApproved {
		t.Fatalf("enroll: %+v %v", r, err)
	}
	var v agents.TokenView
	h.mustCall(t, "site_token_revoke", agents.TokenRef{ID: made.TokenInfo.ID}, &v)
	h.clock.Advance(48 * time.Hour)
	if err := h.connect(t, b, made.Token); err != nil {
		t.Fatalf("known key refused at connect: %v", err)
	}
	if r, err := h.enroll(t, b, "a", "a1", made.Token); err != nil || r.Status != agents.StateApproved {
		t.Fatalf("known key refused at re-registration: %+v %v", r, err)
	}
}

// `site tokens ls` shows what a token allows and its state, never its secret or hash.
func TestTokenListAndRevoke(t *testing.T) {
	h := newHub(t)
	first := h.site(t, "a", true)
	h.clock.Advance(time.Minute) // tokens list oldest first
	h.site(t, "b", false)
	h.clock.Advance(time.Minute)
	var two agents.TokenAddReply
	h.mustCall(t, "site_token_add", agents.TokenAddRequest{Site: "a", TTL: "2h", Uses: 2}, &two)
	if _, err := h.enroll(t, newBridge(t), "a", "a1", two.Token); err != nil {
		t.Fatal(err)
	}
	var raw json.RawMessage
	h.mustCall(t, "site_token_ls", agents.TokenListRequest{}, &raw)
	for _, secret := range []string{first, two.Token} {
		sum := sha256.Sum256([]byte(secret))
		if strings.Contains(string(raw), secret) || strings.Contains(string(raw), hex.EncodeToString(sum[:])) {
			t.Fatalf("token list shows a secret or its hash: %s", raw)
		}
	}
	var list struct {
		Tokens []agents.TokenView `json:"tokens"`
	}
	_ = json.Unmarshal(raw, &list)
	if len(list.Tokens) != 3 {
		t.Fatalf("want 3 tokens, got %s", raw)
	}
	got := list.Tokens[2] // oldest first: a's first, b's, a's second
	if got.ID != two.TokenInfo.ID || got.Site != "a" || got.State != agents.TokenActive || got.UsesLeft == nil || *got.UsesLeft != 1 ||
		got.Used != 1 || !got.Expires.Equal(h.clock.Now().Add(2*time.Hour)) || !got.Created.Equal(h.clock.Now()) || got.AutoApprove {
		t.Fatalf("second token listed as %+v", got)
	}
	if list.Tokens[0].UsesLeft != nil || !list.Tokens[0].AutoApprove || !list.Tokens[0].Expires.Equal(h.clock.Now().Add(-2*time.Minute+agents.DefaultTokenTTL)) {
		t.Fatalf("first token listed as %+v", list.Tokens[0])
	}
	h.mustCall(t, "site_token_ls", agents.TokenListRequest{Site: "b"}, &list)
	if len(list.Tokens) != 1 || list.Tokens[0].Site != "b" {
		t.Fatalf("site b: %+v", list.Tokens)
	}
	// Pages of one, in order.
	var ids []string
	req := agents.TokenListRequest{}
	req.Limit = 1
	for {
		var p struct {
			Tokens []agents.TokenView `json:"tokens"`
			Next   string             `json:"next_cursor"`
		}
		h.mustCall(t, "site_token_ls", req, &p)
		for _, tk := range p.Tokens {
			ids = append(ids, tk.ID)
		}
		if p.Next == "" {
			break
		}
		req.Cursor = p.Next
	}
	if len(ids) != 3 || ids[2] != two.TokenInfo.ID {
		t.Fatalf("paged: %v", ids)
	}
	var v agents.TokenView
	h.mustCall(t, "site_token_revoke", agents.TokenRef{ID: two.TokenInfo.ID}, &v)
	if v.State != agents.TokenRevoked || v.Revoked.IsZero() {
		t.Fatalf("revoked: %+v", v)
	}
	h.clock.Advance(3 * time.Hour)
	h.mustCall(t, "site_token_ls", agents.TokenListRequest{Site: "a"}, &list)
	if list.Tokens[0].State != agents.TokenActive || list.Tokens[1].State != agents.TokenRevoked {
		t.Fatalf("states: %+v", list.Tokens)
	}
	for _, bad := range []struct {
		op   string
		req  any
		code int
		want string
	}{
		{"site_token_revoke", agents.TokenRef{ID: "0123456789ab"}, 404, "site tokens ls"},
		{"site_token_revoke", agents.TokenRef{ID: "short"}, 400, "12-character"},
		{"site_token_add", agents.TokenAddRequest{Site: "nope"}, 404, "site add nope"},
		{"site_token_add", agents.TokenAddRequest{Site: "a", TTL: "soon", Uses: -1}, 400, "uses -1"},
		{"site_token_add", agents.TokenAddRequest{Site: "a", TTL: "0s"}, 400, "more than 0"},
		{"site_token_add", agents.TokenAddRequest{Site: "a", TTL: "9000h"}, 400, "at most"},
		{"site_add", agents.SiteAddRequest{Name: "c", Ranges: []string{"10.0.0.0/8"}, TokenTTL: "-1h"}, 400, "token ttl"},
		{"site_token_ls", agents.TokenListRequest{Site: "nope"}, 404, "site ls"},
	} {
		err := h.call(t, bad.op, bad.req, nil)
		if code(err) != bad.code || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s %+v: want %d saying %q, got %v", bad.op, bad.req, bad.code, bad.want, err)
		}
	}
	// A refused site_add wrote nothing.
	var sites struct{ Sites []agents.Site }
	h.mustCall(t, "site_ls", struct{}{}, &sites)
	if len(sites.Sites) != 2 {
		t.Fatalf("sites: %+v", sites.Sites)
	}
}

// A token for one bridge enrolls one bridge, even when several race for it.
func TestOneUseTokenUnderRace(t *testing.T) {
	h := newHub(t)
	h.site(t, "a", false)
	var made agents.TokenAddReply
	h.mustCall(t, "site_token_add", agents.TokenAddRequest{Site: "a", Uses: 1}, &made)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		b := newBridge(t)
		wg.Go(func() { _, errs[i] = h.enroll(t, b, "a", "r"+string(rune('a'+i)), made.Token) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("%d enrollments with a one-use token: %v", ok, errs)
	}
}
