package tokens_test

import (
	"context"
	"errors"
	"strings"
	"testing"

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
	return tokens.New(kv), kv
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
}
