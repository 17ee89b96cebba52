package lease

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
)

type record struct {
	Fenced
	By string `json:"by"`
}

// TestFencedStore, on a fake clock: a holder whose last renewal is older than 2/3 of the TTL
// gets no token; a holder whose write slipped past its token check cannot overwrite a key
// the next holder wrote (its token is older), and the next holder overwrites what the old
// one wrote; a key written under a newer token cannot be deleted by the old holder.
func TestFencedStore(t *testing.T) {
	ctx := context.Background()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "lease-store-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("lease-store-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	leases, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.KVLeases, History: 1, LimitMarkerTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	state, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "state", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC))
	const ttl = 30 * time.Second
	mk := func(holder string) *Active {
		return New(Config{JS: js, KV: leases, Key: testKey, Holder: holder, TTL: ttl, Clock: fake, Name: "test"})
	}
	put := func(s *Store, key, by string) error {
		return s.Put(ctx, key, func(token uint64) ([]byte, error) { return json.Marshal(record{Fenced{token}, by}) })
	}
	read := func(key string) string {
		e, err := state.Get(ctx, key)
		if err != nil {
			return err.Error()
		}
		var r record
		_ = json.Unmarshal(e.Value(), &r)
		return r.By
	}

	a := mk("a")
	if ok, err := a.acquire(ctx); !ok || err != nil {
		t.Fatalf("a acquires: %t %v", ok, err)
	}
	sa := a.Store(state)
	for _, k := range []string{"run", "host", "gone"} {
		if err := put(sa, k, "a"); err != nil {
			t.Fatal(err)
		}
	}
	// a freezes past 2/3 of its TTL: no token any more
	fake.Advance(ttl*2/3 + time.Second)
	if _, err := a.Token(); !errors.Is(err, ErrFenced) {
		t.Fatalf("token after a stall past the lease: %v", err)
	}
	if err := put(sa, "run", "a-stale"); !errors.Is(err, ErrFenced) || read("run") != "a" {
		t.Fatalf("stale write: %v, run by %s", err, read("run"))
	}

	// the key expires, b takes over and writes two keys
	if err := leases.Delete(ctx, testKey); err != nil {
		t.Fatal(err)
	}
	b := mk("b")
	if ok, err := b.acquire(ctx); !ok || err != nil {
		t.Fatalf("b acquires: %t %v", ok, err)
	}
	sb := b.Store(state)
	for _, k := range []string{"run", "gone"} {
		if err := put(sb, k, "b"); err != nil {
			t.Fatalf("b writes %s over a's value: %v", k, err)
		}
	}
	// a's write that slipped between its token check and a freeze: play it by making a's
	// token look fresh again (its clock reading is all Token has)
	a.validUntil.Store(fake.Now().Add(time.Minute).UnixNano())
	cases := []struct {
		key, want string
		op        func() error
	}{
		{"run", "b", func() error { return put(sa, "run", "a-late") }},
		{"gone", "b", func() error { return sa.Delete(ctx, "gone") }},
	}
	for _, c := range cases {
		if err := c.op(); !errors.Is(err, ErrFenced) || read(c.key) != c.want {
			t.Errorf("%s: a's late op: %v; key by %q, want %q", c.key, err, read(c.key), c.want)
		}
	}
	if !a.Lost() {
		t.Error("a does not know it lost the lease after meeting a newer token")
	}
	// b overwrites what a wrote and b never read
	if err := put(sb, "host", "b"); err != nil || read("host") != "b" {
		t.Fatalf("b over a's host: %v, by %s", err, read("host"))
	}
}
