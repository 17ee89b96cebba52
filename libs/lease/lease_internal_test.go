package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
)

// warnings counts the log records at WARN and above whose message contains a text.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, r.Message)
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }
func (w *warnings) count(text string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.msgs {
		if strings.Contains(m, text) {
			n++
		}
	}
	return n
}

const testKey = "test.active"

// eventually polls f until it returns nil or the time is up.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLeaseTimeline drives the active replica's lease with a fake clock: it is renewed every
// TTL/3; taken by another replica, it is given up at the next renewal; unreachable, it is
// kept while the last renewal is under 2/3 of the TTL old and given up after — before the
// key could expire and a standby take it.
func TestLeaseTimeline(t *testing.T) {
	const ttl = 30 * time.Second // the server's own expiry of the key never comes into play
	cases := []struct {
		name  string
		spoil func(t *testing.T, kv jetstream.KeyValue, cut func())
		// lostAt is the renewal (1, 2, 3…) after which the lease is lost; 0: never.
		lostAt int
	}{
		{name: "renewed", lostAt: 0},
		{name: "taken by another replica", lostAt: 1, spoil: func(t *testing.T, kv jetstream.KeyValue, _ func()) {
			if _, err := kv.Put(context.Background(), testKey, []byte("replica-b")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "bucket unreachable", lostAt: 3, spoil: func(_ *testing.T, _ jetstream.KeyValue, cut func()) { cut() }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv, err := bus.StartServer(bus.ServerConfig{Name: "lease-test", StoreDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Shutdown()
			nc, err := srv.Connect("lease-test")
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.KVLeases, History: 1, LimitMarkerTTL: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			// the lease's own connection, so that cutting it leaves the test's
			lnc, err := srv.Connect("lease-holder")
			if err != nil {
				t.Fatal(err)
			}
			defer lnc.Close()
			ljs, _ := jetstream.New(lnc)
			lkv, err := ljs.KeyValue(ctx, bus.KVLeases)
			if err != nil {
				t.Fatal(err)
			}
			fake := clock.NewFake(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
			logs := &warnings{}
			l := New(Config{JS: ljs, KV: lkv, Key: testKey, Holder: "replica-a", TTL: ttl, Clock: fake, Logger: slog.New(logs), Name: "test"})
			if ok, err := l.acquire(ctx); !ok || err != nil {
				t.Fatalf("acquire: %v %v", ok, err)
			}
			hctx, stop := context.WithCancel(ctx)
			defer stop()
			lost := &l.lost
			held := make(chan struct{})
			go func() { defer close(held); l.hold(hctx, stop) }()
			if !fake.BlockUntil(ctx, 1) {
				t.Fatal("hold never armed its ticker")
			}
			if c.spoil != nil {
				c.spoil(t, kv, lnc.Close)
			}
			rev := func() uint64 {
				e, err := kv.Get(ctx, testKey)
				if err != nil {
					return 0
				}
				return e.Revision()
			}
			for n := 1; n <= 3; n++ {
				before := rev()
				fake.Advance(ttl / 3)
				eventually(t, 10*time.Second, func() error {
					switch {
					case c.lostAt > 0 && n >= c.lostAt:
						if !lost.Load() || hctx.Err() == nil {
							return fmt.Errorf("renewal %d: lease not given up", n)
						}
					case c.lostAt > 0:
						if got := logs.count("renew failed, retrying"); got != n {
							return fmt.Errorf("renewal %d: %d failed renewals logged", n, got)
						}
					default:
						if rev() <= before {
							return fmt.Errorf("renewal %d: key not renewed (revision %d)", n, rev())
						}
					}
					return nil
				})
				if c.lostAt > 0 && n >= c.lostAt {
					break
				}
				if lost.Load() {
					t.Fatalf("lease given up at renewal %d, want %d", n, c.lostAt)
				}
			}
			if c.lostAt == 0 {
				stop()
			}
			<-held
			if c.lostAt == 0 && lost.Load() {
				t.Fatal("a renewed lease was reported lost")
			}
		})
	}
}

// TestReleaseAfterLateRenewal: a renewal the server applied after the holder stopped
// waiting for it (its context ended as serving stopped, or its ack was lost) leaves the key
// at a revision the holder never learnt. Stopping must still delete the key — else a
// standby waits out the whole TTL — but never a key another replica wrote since.
func TestReleaseAfterLateRenewal(t *testing.T) {
	cases := []struct {
		name string
		// after is who writes the key after the late renewal ("" nobody).
		after    string
		wantHeld string // the key's value once Serve returned; "" gone
	}{
		{name: "late renewal only", wantHeld: ""},
		{name: "standby took the key after it", after: "replica-b", wantHeld: "replica-b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			srv, err := bus.StartServer(bus.ServerConfig{Name: "lease-release-test", StoreDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Shutdown()
			nc, err := srv.Connect("lease-release-test")
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.KVLeases, History: 1, LimitMarkerTTL: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			fake := clock.NewFake(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
			const ttl = time.Minute // the key never expires within the test
			l := New(Config{JS: js, KV: kv, Key: testKey, Holder: "replica-a", TTL: ttl, Clock: fake, Name: "test"})
			sctx, stop := context.WithCancel(ctx)
			defer stop()
			served := false
			err = l.Serve(sctx, func(context.Context) error {
				served = true
				// the renewal whose ack never reached the holder: applied on the server,
				// l.rev not moved
				m := &nats.Msg{Subject: "$KV." + bus.KVLeases + "." + testKey, Data: []byte("replica-a")}
				if _, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(l.rev), jetstream.WithMsgTTL(ttl)); err != nil {
					t.Errorf("late renewal: %v", err)
				}
				if c.after != "" {
					if _, err := kv.Put(ctx, testKey, []byte(c.after)); err != nil {
						t.Errorf("standby's write: %v", err)
					}
				}
				stop()
				return nil
			}, nil)
			if err != nil || !served {
				t.Fatalf("Serve: %v (served %v)", err, served)
			}
			e, err := kv.Get(ctx, testKey)
			switch {
			case c.wantHeld == "" && err == nil:
				t.Fatalf("key still held by %q after the holder stopped: a standby waits for the TTL", e.Value())
			case c.wantHeld == "" && !errors.Is(err, jetstream.ErrKeyNotFound):
				t.Fatal(err)
			case c.wantHeld != "" && err != nil:
				t.Fatalf("key of %s deleted by the stopping holder: %v", c.wantHeld, err)
			case c.wantHeld != "" && string(e.Value()) != c.wantHeld:
				t.Fatalf("key held by %q, want %q", e.Value(), c.wantHeld)
			}
		})
	}
}

// TestTakeDrop: Take holds a free key (or the holder's own) at once and renews it in the
// background; another holder cannot take it meanwhile; Drop deletes it, fences the dropped
// holding and lets the other take it with a larger token; a holding whose key another
// replica overwrote is lost at its next renewal: its context ends and Token fences.
func TestTakeDrop(t *testing.T) {
	ctx := context.Background()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "lease-take-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("lease-take-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.KVLeases, History: 1, LimitMarkerTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	const ttl = time.Minute // the key never expires within the test
	mk := func(holder string) *Active {
		return New(Config{JS: js, KV: kv, Key: testKey, Holder: holder, TTL: ttl, Clock: fake, Name: "test"})
	}
	a, b := mk("replica-a"), mk("replica-b")
	heldA, ok, err := a.Take(ctx)
	if !ok || err != nil {
		t.Fatalf("a: Take of a free key: ok %v, err %v", ok, err)
	}
	tokA, err := a.Token()
	if err != nil {
		t.Fatalf("a holds the key, Token: %v", err)
	}
	if _, _, err := a.Take(ctx); err == nil {
		t.Fatal("a: a second Take of a held lease succeeded")
	}
	if _, ok, err := b.Take(ctx); ok || err != nil {
		t.Fatalf("b: Take of a's key: ok %v, err %v; want not taken, no error", ok, err)
	}
	a.Drop(ctx)
	if heldA.Err() == nil {
		t.Fatal("a dropped the lease, its holding's context still open")
	}
	if _, err := a.Token(); !errors.Is(err, ErrFenced) {
		t.Fatalf("a dropped the lease, Token: %v; want ErrFenced", err)
	}
	if _, err := kv.Get(ctx, testKey); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a dropped the lease, the key: %v; want deleted", err)
	}
	heldB, ok, err := b.Take(ctx)
	if !ok || err != nil {
		t.Fatalf("b: Take after a's Drop: ok %v, err %v", ok, err)
	}
	tokB, _ := b.Token()
	if tokB <= tokA {
		t.Fatalf("b's token %d is not above a's %d", tokB, tokA)
	}
	// the same holder restarted (a new Active, as after a crash) takes its own key back
	b2 := mk("replica-b")
	if _, err := kv.Put(ctx, testKey, []byte("replica-c")); err != nil { // another replica overwrote the key
		t.Fatal(err)
	}
	bctx, bcancel := context.WithTimeout(ctx, 30*time.Second)
	defer bcancel()
	if !fake.BlockUntil(bctx, 1) { // b's renewal ticker is waiting
		t.Fatal("b's holding has no renewal ticker waiting")
	}
	fake.Advance(ttl / 3) // b's renewal finds the key changed: lost
	select {
	case <-heldB.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("b's holding did not end after its key was overwritten")
	}
	if !b.Lost() {
		t.Fatal("b's key was overwritten, b not lost")
	}
	if _, err := b.Token(); !errors.Is(err, ErrFenced) {
		t.Fatalf("b lost the lease, Token: %v; want ErrFenced", err)
	}
	b.Drop(ctx) // a lost lease is not released: the key stays replica-c's
	if e, err := kv.Get(ctx, testKey); err != nil || string(e.Value()) != "replica-c" {
		t.Fatalf("after b's Drop the key is %v (%v); want replica-c's", e, err)
	}
	if _, ok, err := b2.Take(ctx); ok || err != nil {
		t.Fatalf("b restarted: Take of replica-c's key: ok %v, err %v; want not taken", ok, err)
	}
	if _, err := kv.Put(ctx, testKey, []byte("replica-b")); err != nil { // b's key from before a restart
		t.Fatal(err)
	}
	if _, ok, err := b2.Take(ctx); !ok || err != nil {
		t.Fatalf("b restarted: Take of its own key: ok %v, err %v; want taken at once", ok, err)
	}
	b2.Drop(ctx)
}
