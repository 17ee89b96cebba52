package mapping

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/libs/clock"
)

// testService is the mapping service's state on a real embedded JetStream, without its
// endpoints (what the run records need).
func testService(t *testing.T, replica string, clk clock.Clock) *service {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	cfg := DefaultConfig()
	cfg.Replica = replica
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := newService(ctx, cfg, Deps{NC: nc, JS: js, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Who may take a run over: nobody's yet (created), this replica's own from a previous life,
// another replica's once its heartbeat is stale — never a live replica's; and a run started
// MaxAttempts times is given up with the service marked failed.
func TestClaimRun(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	s := testService(t, "hub-a", clk)
	ctx := context.Background()
	if err := s.put(ctx, api.AppService{Name: "payroll", State: api.ServiceMapping}); err != nil {
		t.Fatal(err)
	}
	put := func(r runRecord) {
		b, _ := json.Marshal(r)
		if _, err := s.kvRuns.Put(ctx, r.Service, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name    string
		record  *runRecord
		advance time.Duration
		wantErr error
		attempt int
	}{
		{"no run yet", nil, 0, nil, 1},
		{"this replica's run from before a crash", &runRecord{ID: "r1", Service: "payroll", Owner: "hub-a", Heartbeat: t0, Attempts: 1}, 0, nil, 2},
		{"a live replica's run", &runRecord{ID: "r2", Service: "payroll", Owner: "hub-b", Heartbeat: t0, Attempts: 1}, 0, errMappedElsewhere, 0},
		{"a run whose replica stopped beating", &runRecord{ID: "r3", Service: "payroll", Owner: "hub-b", Heartbeat: t0, Attempts: 1}, s.cfg.RunStale + time.Second, nil, 2},
		{"a run interrupted MaxAttempts times", &runRecord{ID: "r4", Service: "payroll", Owner: "hub-a", Heartbeat: t0, Attempts: s.cfg.MaxAttempts}, 0, errors.New("given up"), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk.Set(t0)
			_ = s.kvRuns.Purge(ctx, "payroll")
			if c.record != nil {
				put(*c.record)
			}
			clk.Advance(c.advance)
			r, _, err := s.claimRun(ctx, "payroll", reasonByHand)
			switch {
			case c.wantErr == nil && err != nil:
				t.Fatalf("claim: %v", err)
			case errors.Is(c.wantErr, errMappedElsewhere) && !errors.Is(err, errMappedElsewhere):
				t.Fatalf("claim of a live replica's run: %v, want errMappedElsewhere", err)
			case c.wantErr != nil && err == nil:
				t.Fatalf("claimed %+v, want an error", r)
			}
			got, _, gerr := s.getRun(ctx, "payroll")
			if gerr != nil {
				t.Fatal(gerr)
			}
			switch {
			case c.wantErr == nil:
				if got == nil || got.Owner != "hub-a" || got.Attempts != c.attempt || !got.Heartbeat.Equal(clk.Now()) {
					t.Errorf("record after the claim: %+v, want owner hub-a, attempt %d, heartbeat now", got, c.attempt)
				}
				if c.record != nil && got.ID != c.record.ID {
					t.Errorf("a resumed run keeps its id: %s, want %s", got.ID, c.record.ID)
				}
			case errors.Is(c.wantErr, errMappedElsewhere):
				if got == nil || got.Owner != "hub-b" {
					t.Errorf("the live replica's record changed: %+v", got)
				}
			default:
				if got != nil {
					t.Errorf("a run given up stays recorded: %+v", got)
				}
				a, _ := s.get(ctx, "payroll")
				if a.State != api.ServiceFailed || a.Error == "" {
					t.Errorf("service after giving up: %s %q, want failed with the reason", a.State, a.Error)
				}
			}
		})
	}
}

// A replica whose run was taken over (it was presumed dead) stops mapping at its next beat.
func TestBeatStopsWhenTakenOver(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	s := testService(t, "hub-a", clk)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, rev, err := s.claimRun(ctx, "crm", reasonByHand)
	if err != nil {
		t.Fatal(err)
	}
	mctx, mcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { s.beat(mctx, mcancel, r, rev); close(done) }()
	clk.BlockUntil(ctx, 1)
	clk.Advance(s.cfg.RunHeartbeat)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _, _ := s.getRun(ctx, "crm")
		if got != nil && got.Heartbeat.Equal(clk.Now()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("heartbeat not written: %+v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// another replica takes it over
	other := r
	other.Owner = "hub-b"
	b, _ := json.Marshal(other)
	if _, err := s.kvRuns.Put(ctx, "crm", b); err != nil {
		t.Fatal(err)
	}
	clk.Advance(s.cfg.RunHeartbeat)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the beat goes on after a takeover")
	}
	if mctx.Err() == nil {
		t.Error("the mapping was not cancelled after a takeover")
	}
	if got, _, _ := s.getRun(ctx, "crm"); got == nil || got.Owner != "hub-b" {
		t.Errorf("the new owner's record was overwritten: %+v", got)
	}
}
