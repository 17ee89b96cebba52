package importer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/lease"
)

func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Timeline: two replicas run the scheduler, each behind the schedule lease, on a fake clock.
// A schedule every 5 minutes fires once per slot: at 0:05, 0:10, …; when the active
// replica stops, the other takes over and the next slots still fire once; slots missed
// while no replica was active fire once, as the latest of them.
func TestScheduleFiresOncePerSlotAcrossReplicas(t *testing.T) {
	srv, err := bus.StartServer(bus.ServerConfig{Name: "imp-sched", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("imp-sched")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: KVSchedules, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	leases, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.KVLeases, History: 1, LimitMarkerTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 3, 1, 0, 0, 30, 0, time.UTC)
	clk := clock.NewFake(start)
	sc := api.Schedule{Name: "nightly", Cron: "*/5 * * * *", MapName: "m", Created: start}
	b, _ := json.Marshal(sc)
	if _, err := kv.Create(ctx, sc.Name, b); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var fired []string // "replica@15:04"
	replica := func(name string) (stop func()) {
		sch := &scheduler{kv: kv, clock: clk, log: slog.New(slog.DiscardHandler), tick: 10 * time.Second,
			fire: func(_ context.Context, sc api.Schedule, slot time.Time) (string, error) {
				mu.Lock()
				defer mu.Unlock()
				fired = append(fired, name+"@"+slot.Format("15:04"))
				return "run-" + slot.Format("1504"), nil
			}}
		active := lease.New(lease.Config{JS: js, KV: leases, Key: ScheduleLeaseKey, Holder: name, TTL: 30 * time.Second, Clock: clk, Name: name})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = active.Serve(rctx, sch.loop, nil) }()
		return func() { cancel(); <-done }
	}
	slots := func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := make([]string, len(fired))
		for i, f := range fired {
			out[i] = f[len(f)-5:]
		}
		return out
	}
	stopA := replica("a")
	eventually(t, 10*time.Second, func() error { // a holds the lease before b starts
		if e, err := leases.Get(ctx, ScheduleLeaseKey); err != nil || string(e.Value()) != "a" {
			return fmt.Errorf("lease not held by a yet (%v)", err)
		}
		return nil
	})
	stopB := replica("b")
	defer func() { stopB() }() // the last replica started
	// advance moves the clock 10 s at a time up to t, letting the replicas' passes run.
	advance := func(to time.Duration, wait time.Duration, want []string) {
		t.Helper()
		for clk.Now().Before(start.Add(to)) {
			clk.Advance(10 * time.Second)
			time.Sleep(2 * time.Millisecond) // let the scheduler goroutines take the tick
		}
		eventually(t, wait, func() error {
			clk.Advance(10 * time.Millisecond) // a standby's retry waits on the clock too
			if got := slots(); !slices.Equal(got, want) {
				return fmt.Errorf("slots fired %v, want %v", got, want)
			}
			return nil
		})
	}
	advance(16*time.Minute, 10*time.Second, []string{"00:05", "00:10", "00:15"})
	stopA() // the active replica stops: b takes the lease over
	advance(31*time.Minute, 10*time.Second, []string{"00:05", "00:10", "00:15", "00:20", "00:25", "00:30"})
	mu.Lock()
	if last := fired[len(fired)-1]; last[:1] != "b" {
		t.Errorf("slot after a stopped fired by %q, want b", last)
	}
	mu.Unlock()
	// Nobody active for 22 minutes: the missed slots fire once, as the latest.
	stopB()
	clk.Advance(22 * time.Minute)
	stopB = replica("c")
	// A stopping replica releases the lease; should its release miss (a renew acked by
	// the server after its context ended), the key expires after its TTL in real time.
	advance(54*time.Minute, 45*time.Second, []string{"00:05", "00:10", "00:15", "00:20", "00:25", "00:30", "00:50"})
	e, err := kv.Get(ctx, sc.Name)
	if err != nil {
		t.Fatal(err)
	}
	var got api.Schedule
	_ = json.Unmarshal(e.Value(), &got)
	if got.LastRun != "run-0050" || got.Next == nil || got.Next.Format("15:04") != "00:55" {
		t.Errorf("schedule after the last slot: last run %q, next %v", got.LastRun, got.Next)
	}
}
