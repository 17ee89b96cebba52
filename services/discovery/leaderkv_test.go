package discovery

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
)

// TestLeaderReadsSurviveDirectGetsTurnedOff: a bucket handle bound while its stream allowed
// direct gets fails every Get with "no responders" once direct gets are turned off (what a
// replica that bound in the moment a sibling's CreateOrUpdateKeyValue turned them on again
// met on the cluster: it took no run and answered run_get with 404). The leader-read handle
// reads the same bucket through the stream leader and answers as nats.go's own Get does:
// values and revisions, deleted, purged and expired keys not found.
func TestLeaderReadsSurviveDirectGetsTurnedOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "leader-kv", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("leader-kv-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	racy, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "leader_kv_test", History: 5, LimitMarkerTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// a single server's bucket keeps its handle: its direct gets are current
	if kv, err := leaderReads(ctx, js, nc, racy); err != nil || kv != racy {
		t.Fatalf("leaderReads of an R1 bucket: %T, %v; want the handle itself", kv, err)
	}
	lkv := newLeaderKV(js, nc, racy)

	first, err := racy.Put(ctx, "run.a", []byte("queued"))
	if err != nil {
		t.Fatal(err)
	}
	last, _ := racy.Put(ctx, "run.a", []byte("completed"))
	if _, err := racy.Put(ctx, "deleted", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := racy.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	_, _ = racy.Put(ctx, "purged", []byte("x"))
	if err := racy.Purge(ctx, "purged"); err != nil {
		t.Fatal(err)
	}
	other, _ := racy.Put(ctx, "other", []byte("y"))
	if _, err := racy.Create(ctx, "expired", []byte("x"), jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error { // the server writes its marker when the TTL ran out
		if _, err := racy.Get(ctx, "expired"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("key with a 1 s TTL: Get says %v, want it expired", err)
		}
		return nil
	})

	// direct gets off, as bus.WithReplicas leaves a cluster's buckets
	st, err := js.Stream(ctx, "KV_leader_kv_test")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowDirect = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := racy.Get(ctx, "run.a"); err == nil {
		t.Fatal("the handle bound with direct gets still reads with them off: the failure this guards against is gone, revisit leaderkv.go")
	}
	fresh, err := js.KeyValue(ctx, "leader_kv_test") // bound now: reads through the leader itself
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name      string
		key       string
		rev       uint64 // 0: the latest
		wantValue string
		wantRev   uint64
		wantErr   error
	}{
		{name: "latest value", key: "run.a", wantValue: "completed", wantRev: last},
		{name: "an older revision", key: "run.a", rev: first, wantValue: "queued", wantRev: first},
		{name: "a revision of another key", key: "run.a", rev: other, wantErr: jetstream.ErrKeyNotFound},
		{name: "missing", key: "run.none", wantErr: jetstream.ErrKeyNotFound},
		{name: "deleted", key: "deleted", wantErr: jetstream.ErrKeyNotFound},
		{name: "purged", key: "purged", wantErr: jetstream.ErrKeyNotFound},
		{name: "expired by its TTL", key: "expired", wantErr: jetstream.ErrKeyNotFound},
		{name: "invalid key", key: "a b", wantErr: jetstream.ErrInvalidKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, kv := range []struct {
				name string
				kv   jetstream.KeyValue
			}{{"leader reads", lkv}, {"nats.go bound after (reference)", fresh}} {
				var e jetstream.KeyValueEntry
				var err error
				if c.rev == 0 {
					e, err = kv.kv.Get(ctx, c.key)
				} else {
					e, err = kv.kv.GetRevision(ctx, c.key, c.rev)
				}
				if c.wantErr != nil {
					if !errors.Is(err, c.wantErr) {
						t.Errorf("%s: %s rev %d: got %v, want %v", kv.name, c.key, c.rev, err, c.wantErr)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %s rev %d: %v", kv.name, c.key, c.rev, err)
					continue
				}
				if string(e.Value()) != c.wantValue || e.Revision() != c.wantRev || e.Key() != c.key || e.Bucket() != "leader_kv_test" ||
					e.Operation() != jetstream.KeyValuePut || e.Created().IsZero() {
					t.Errorf("%s: %s rev %d: got %q rev %d key %q bucket %q op %v created %v; want %q rev %d", kv.name, c.key, c.rev,
						e.Value(), e.Revision(), e.Key(), e.Bucket(), e.Operation(), e.Created(), c.wantValue, c.wantRev)
				}
			}
		})
	}
}
