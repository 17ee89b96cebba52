package orchestration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
)

// replica is one orchestration replica of a failover test, on its own connection.
type replica struct {
	mu    sync.Mutex
	armed time.Time // the slot its cron loop sleeps until (only the active one has a cron loop)
	stop  func()    // graceful: releases the lease
	kill  func()    // a crash: the connection goes first, the lease stays until it expires
}

func (r *replica) cronAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.armed
}

// startReplica runs a replica with a one-minute active lease (a standby polls for it every
// 15 s of the fake clock); crash, when set, is its crash-point hook.
func (h *harness) startReplica(name string, crash func(ctx context.Context, point string)) *replica {
	h.t.Helper()
	nc, err := h.srv.Connect("orchestration-" + name)
	if err != nil {
		h.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	cfg := DefaultConfig()
	cfg.Replica = name
	cfg.ActiveLease = time.Minute
	s, err := newService(ctx, cfg, Deps{NC: nc, JS: js, Clock: h.clock})
	if err != nil {
		h.t.Fatal(err)
	}
	r := &replica{}
	s.crashPoint = crash
	s.cronArmed = func(at time.Time) {
		r.mu.Lock()
		r.armed = at
		r.mu.Unlock()
	}
	done := make(chan error, 1)
	go func() { done <- s.serveWhenActive(ctx) }()
	var once sync.Once
	r.stop = func() { once.Do(func() { cancel(); <-done; nc.Close() }) }
	r.kill = func() { once.Do(func() { nc.Close(); cancel(); <-done }) }
	h.t.Cleanup(r.stop)
	return r
}

// Two replicas over one NATS, the active one stopped at a cron slot: the standby takes
// over and the slot fires exactly once — whether the active fired it just before it
// stopped, or died after claiming the slot and before starting its run (the standby then
// starts it: a claim is no run).
func TestCronFailoverAtSlot(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash bool // die after claiming the slot; else stop gracefully at the slot
	}{
		{name: "stopped at the slot boundary"},
		{name: "died between claiming the slot and starting its run", crash: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			q := h.clock.Now().Truncate(15 * time.Minute).Add(15 * time.Minute)
			h.clock.Set(q.Add(7 * time.Minute)) // no slot in the catch-up window
			claimed := make(chan struct{})
			var hook func(ctx context.Context, point string)
			if tc.crash {
				var once sync.Once
				hook = func(ctx context.Context, point string) {
					if point == "cron-claimed" {
						once.Do(func() { close(claimed) })
						<-ctx.Done() // frozen until killed
					}
				}
			}
			r1 := h.startReplica("r1", hook)
			eventually(t, 10*time.Second, func() error {
				var out api.ListResponse
				return bus.Request(h.ctx, h.nc, Service, api.List.Name, api.ListRequest{}, &out)
			})
			r2 := h.startReplica("r2", nil)
			h.add(`
name: tick
on: {cron: "*/15 * * * *"}
steps:
  - {id: hold, kind: approval}
`)
			eventually(t, 10*time.Second, func() error {
				if at := r1.cronAt(); !at.Equal(q.Add(15 * time.Minute)) {
					return fmt.Errorf("r1's cron loop sleeps until %s", at)
				}
				return nil
			})
			if !r2.cronAt().IsZero() {
				t.Fatal("the standby runs a cron loop")
			}

			h.clock.Set(q.Add(15 * time.Minute)) // the slot
			if tc.crash {
				<-claimed
				r1.kill()
				// its lease expires (NATS's TTL, on the real clock: the test deletes it)
				kv, err := h.js.KeyValue(h.ctx, bus.KVLeases)
				if err != nil {
					t.Fatal(err)
				}
				if err := kv.Delete(h.ctx, ActiveLeaseKey); err != nil {
					t.Fatal(err)
				}
			} else {
				r1.stop()
			}

			// the standby polls every 15 s: it takes over within the catch-up window
			for i := 0; r2.cronAt().IsZero(); i++ {
				if i == 8 {
					t.Fatal("the standby did not take over within 2 minutes of the fake clock")
				}
				h.clock.Advance(15 * time.Second)
				deadline := time.Now().Add(2 * time.Second)
				for r2.cronAt().IsZero() && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
			}
			eventually(t, 10*time.Second, func() error {
				if at := r2.cronAt(); !at.Equal(q.Add(30 * time.Minute)) {
					return fmt.Errorf("r2's cron loop sleeps until %s", at)
				}
				return nil
			})
			want := []time.Time{q.Add(15 * time.Minute)}
			if got := h.cronSlots("tick"); !slices.EqualFunc(got, want, time.Time.Equal) {
				t.Fatalf("slots fired %v, want %v (exactly once)", got, want)
			}
			// and the next slot fires once, on r2
			h.clock.Set(q.Add(30 * time.Minute))
			eventually(t, 10*time.Second, func() error {
				if got := h.cronSlots("tick"); len(got) != 2 || !got[1].Equal(q.Add(30*time.Minute)) {
					return fmt.Errorf("slots fired %v", got)
				}
				return nil
			})
		})
	}
}
