package discovery

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
)

// crashAt closes its incarnation's connection the first time point is reached.
type crashAt struct {
	point   Point
	nc      *nats.Conn
	once    sync.Once
	crashed chan struct{}
}

func (c *crashAt) At(p Point, _ string) {
	if p == c.point {
		c.once.Do(func() { c.nc.Close(); close(c.crashed) })
	}
}

// TestScheduleSlots, on a fake clock: after downtime a schedule's missed slots fire once,
// for the latest slot, not once per missed slot; and a crash after a slot was found due but
// before its run started does not lose the slot — the next incarnation starts it, once.
func TestScheduleSlots(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.227.0/24", 0)
	fake := clock.NewFake(t0)
	incarnation := func(name string, hooks Hooks) (*nats.Conn, func()) {
		nc, err := h.srv.Connect(name)
		if err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.DataDir, cfg.Replica, cfg.Hooks = h.dataDir, "hub", hooks
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = Run(cctx, cfg, Deps{NC: nc, JS: js, CurveKey: h.hub, Clock: fake}) }()
		eventually(t, 10*time.Second, func() error { return bus.Request(ctx, h.nc, Service, "runs_ls", struct{}{}, nil) })
		return nc, func() {
			cancel()
			<-done
			nc.Close()
		}
	}
	runsOf := func(schedule string) []RunView {
		var out struct {
			Runs []RunView `json:"runs"`
		}
		h.request(ctx, "runs_ls", struct{}{}, &out)
		var rs []RunView
		for _, r := range out.Runs {
			if r.Schedule == schedule {
				rs = append(rs, r)
			}
		}
		return rs
	}
	schedule := func(name string) Schedule {
		var out struct {
			Schedules []Schedule `json:"schedules"`
		}
		h.request(ctx, "schedules_ls", struct{}{}, &out)
		for _, sc := range out.Schedules {
			if sc.Name == name {
				return sc
			}
		}
		t.Fatalf("schedule %s not found", name)
		return Schedule{}
	}
	// tick moves the fake clock a second at a time until cond holds
	tick := func(what string, cond func() error) {
		t.Helper()
		eventually(t, 20*time.Second, func() error {
			fake.Advance(time.Second)
			if err := cond(); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		})
	}

	// a crash between finding the slot due and starting its run
	_, stop := incarnation("incarnation-1", nil)
	h.request(ctx, "schedules_add", Schedule{Name: "hourly", Site: "lab", Ranges: []string{"127.77.227.0/30"}, Cron: "0 * * * *"}, nil)
	stop()
	hook := &crashAt{point: PointScheduleFire, crashed: make(chan struct{})}
	nc2, err := h.srv.Connect("incarnation-2")
	if err != nil {
		t.Fatal(err)
	}
	hook.nc = nc2
	js2, _ := jetstream.New(nc2)
	cfg := DefaultConfig()
	cfg.DataDir, cfg.Replica, cfg.Hooks = h.dataDir, "hub", hook
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = Run(cctx, cfg, Deps{NC: nc2, JS: js2, CurveKey: h.hub, Clock: fake}) }()
	fake.Set(t0.Add(time.Hour)) // 03:00: the first slot
	eventually(t, 20*time.Second, func() error {
		select {
		case <-hook.crashed:
			return nil
		default:
			fake.Advance(time.Second)
			return fmt.Errorf("slot not found due yet")
		}
	})
	ccancel()
	<-done
	_, stop = incarnation("incarnation-3", nil)
	tick("the slot fires after the crash", func() error {
		if rs := runsOf("hourly"); len(rs) != 1 || rs[0].ID != slotRunID("hourly", t0.Add(time.Hour)) {
			return fmt.Errorf("runs of the schedule: %d", len(rs))
		}
		return nil
	})
	if sc := schedule("hourly"); sc.LastFired == nil || !sc.LastFired.Equal(t0.Add(time.Hour)) || sc.LastRun != slotRunID("hourly", t0.Add(time.Hour)) {
		t.Fatalf("after the crash: %+v", sc)
	}
	stop()

	// downtime: five slots (04:00 … 08:00) pass with no replica serving
	fake.Set(t0.Add(6*time.Hour + 30*time.Minute))
	_, stop = incarnation("incarnation-4", nil)
	defer stop()
	tick("missed slots fire once", func() error {
		if sc := schedule("hourly"); sc.LastFired == nil || !sc.LastFired.Equal(t0.Add(6*time.Hour)) {
			return fmt.Errorf("last fired %v", sc.LastFired)
		}
		return nil
	})
	for range 5 {
		fake.Advance(time.Second)
	}
	if rs := runsOf("hourly"); len(rs) != 2 {
		t.Fatalf("after downtime the schedule has %d runs, want 2 (the 03:00 slot, then the missed slots coalesced into 08:00)", len(rs))
	}
}
