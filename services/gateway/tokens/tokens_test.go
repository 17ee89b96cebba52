package tokens_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

func store(t *testing.T) (*tokens.Store, jetstream.KeyValue) {
	srv, err := bus.StartServer(bus.ServerConfig{Name: "tok", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	nc, _ := srv.Connect("tok")
	t.Cleanup(func() { nc.Close(); srv.Shutdown() })
	js, _ := jetstream.New(nc)
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: bus.KVTokens})
	if err != nil {
		t.Fatal(err)
	}
	return newStore(t, kv), kv
}

func newStore(t *testing.T, kv jetstream.KeyValue) *tokens.Store {
	t.Helper()
	key, err := tokens.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := tokens.New(kv, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTokenLifecycle(t *testing.T) {
	s, kv := store(t)
	ctx := context.Background()
	secret, tok, err := s.Create(ctx, "ci", tokens.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Verify(ctx, secret)
	if err != nil || got.Role != tokens.RoleOperator || got.Name != "ci" {
		t.Fatalf("verify: %+v %v", got, err)
	}
	// The secret is stored nowhere: not as a key, not in a value.
	keys, _ := kv.ListKeys(ctx)
	for k := range keys.Keys() {
		e, _ := kv.Get(ctx, k)
		if strings.Contains(k, secret) || strings.Contains(string(e.Value()), secret) || strings.Contains(string(e.Value()), secret[4:]) {
			t.Fatal("token secret stored in clear")
		}
	}
	if _, err := s.Verify(ctx, secret+"x"); !errors.Is(err, tokens.ErrInvalid) {
		t.Fatalf("altered secret: %v", err)
	}
	list, _ := s.List(ctx)
	if len(list) != 1 || list[0].ID != tok.ID {
		t.Fatalf("list: %+v", list)
	}
	if _, err := s.Revoke(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, secret); !errors.Is(err, tokens.ErrInvalid) {
		t.Fatalf("revoked token still valid: %v", err)
	}
	if _, _, err := s.Create(ctx, "x", "root"); err == nil || !strings.Contains(err.Error(), "admin, operator, viewer") {
		t.Fatalf("bad role: %v", err)
	}
	if _, err := tokens.New(kv, []byte("short")); err == nil || !strings.Contains(err.Error(), "tokens.key") {
		t.Fatalf("short key accepted: %v", err)
	}
}

// A record is a token only if the gateway wrote it where it is: anything planted in the
// bucket (the review's reply-subject attack wrote a service's error JSON there) is refused.
func TestForgedRecordsAreRefused(t *testing.T) {
	s, kv := store(t)
	other := newStore(t, kv) // same bucket, another hub's key
	ctx := context.Background()
	const secret = "opt_forged-secret-0123456789abcdefghijklmnopqrst"
	h := tokens.Hash(secret)
	id := h[:12]
	created := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	admin := tokens.Token{ID: id, Name: "x", Role: tokens.RoleAdmin, Created: created}
	with := func(f func(*tokens.Token)) tokens.Token { t := admin; f(&t); return t }
	raw := func(v any) []byte { b, _ := json.Marshal(v); return b }
	_, real, err := s.Create(ctx, "real", tokens.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	var realValue []byte
	keys, _ := kv.ListKeys(ctx)
	for k := range keys.Keys() {
		if k[:12] == real.ID {
			e, _ := kv.Get(ctx, k)
			realValue = e.Value()
		}
	}
	edited := func() []byte {
		var m map[string]any
		_ = json.Unmarshal(s.Sign(h, with(func(t *tokens.Token) { t.Role = tokens.RoleViewer })), &m)
		m["role"] = tokens.RoleAdmin
		return raw(m)
	}()

	for _, tc := range []struct {
		name   string
		record []byte
		ok     bool
		listed bool // a real record, listed though refused
	}{
		{"signed by this hub (control)", s.Sign(h, admin), true, true},
		{"service error JSON (review #1)", []byte(`{"type":"urn:outpost:error","code":403,"message":"enrollment needs a valid site token"}`), false, false},
		{"blank role, unsigned", raw(with(func(t *tokens.Token) { t.Role = "" })), false, false},
		{"admin, unsigned", raw(admin), false, false},
		{"admin, empty signature", raw(map[string]any{"id": id, "name": "x", "role": "admin", "created": created, "sig": ""}), false, false},
		{"admin, signature not hex", raw(map[string]any{"id": id, "name": "x", "role": "admin", "created": created, "sig": "zz"}), false, false},
		{"admin, signed by another key", other.Sign(h, admin), false, false},
		{"blank role, signed", s.Sign(h, with(func(t *tokens.Token) { t.Role = "" })), false, false},
		{"unknown role, signed", s.Sign(h, with(func(t *tokens.Token) { t.Role = "root" })), false, false},
		{"wrong hash id, signed", s.Sign(h, with(func(t *tokens.Token) { t.ID = real.ID })), false, false},
		{"signed for another key", s.Sign(tokens.Hash("opt_other"), admin), false, false},
		{"another token's record copied here", realValue, false, false},
		{"role raised after signing", edited, false, false},
		{"revoked, signed", s.Sign(h, with(func(t *tokens.Token) { t.Revoked = true })), false, true},
		{"not JSON", []byte("garbage"), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := kv.Put(ctx, h, tc.record); err != nil {
				t.Fatal(err)
			}
			got, err := s.Verify(ctx, secret)
			if tc.ok {
				if err != nil || got.Role != tokens.RoleAdmin {
					t.Fatalf("valid record refused: %+v %v", got, err)
				}
				return
			}
			if !errors.Is(err, tokens.ErrInvalid) {
				t.Fatalf("forged record accepted: %+v %v", got, err)
			}
			list, _ := s.List(ctx)
			for _, l := range list {
				if l.ID == id && !tc.listed {
					t.Fatalf("forged record listed: %+v", l)
				}
			}
		})
	}
}

// Revoking by name revokes every token of that name, not the first one found (review #14).
func TestRevokeByNameRevokesAll(t *testing.T) {
	s, _ := store(t)
	ctx := context.Background()
	var secrets []string
	for range 3 {
		sec, _, err := s.Create(ctx, "ci", tokens.RoleOperator)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, sec)
	}
	keep, keepTok, _ := s.Create(ctx, "deploy", tokens.RoleOperator)
	revoked, err := s.Revoke(ctx, "ci")
	if err != nil || len(revoked) != 3 {
		t.Fatalf("revoke ci: %d tokens, %v", len(revoked), err)
	}
	for i, sec := range secrets {
		if _, err := s.Verify(ctx, sec); !errors.Is(err, tokens.ErrInvalid) {
			t.Fatalf("token %d named ci still valid: %v", i, err)
		}
	}
	if _, err := s.Verify(ctx, keep); err != nil {
		t.Fatalf("token of another name revoked: %v", err)
	}
	// By ID: exactly that one.
	if r, err := s.Revoke(ctx, keepTok.ID); err != nil || len(r) != 1 || r[0].ID != keepTok.ID {
		t.Fatalf("revoke by id: %+v %v", r, err)
	}
	if _, err := s.Revoke(ctx, "nobody"); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("unknown name: %v", err)
	}
}
