package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
)

// TestRetentionPrunes, on a fake clock: a run that ended more than the retention ago goes
// with its hosts and leftover pending groups, leaving no delete marker; a run that ended
// recently keeps its record and hosts but loses its pending groups; a run still going, a
// run whose id starts with a pruned one's, and another service's key in the runs bucket are
// untouched. An incarnation started when the retention of the recent run is past prunes
// that one too.
func TestRetentionPrunes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.209.0/24", 0)
	kvRuns, _ := h.js.KeyValue(ctx, bus.KVRuns)
	kvHosts, _ := h.js.CreateOrUpdateKeyValue(ctx, bus.KV(KVHosts))
	kvPending, _ := h.js.CreateOrUpdateKeyValue(ctx, bus.KV(KVPending))
	put := func(kv jetstream.KeyValue, key string, v any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if _, err := kv.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	at := func(d time.Duration) *time.Time { x := t0.Add(d); return &x }
	day := 24 * time.Hour
	runs := []struct {
		id, state string
		ended     *time.Time
	}{
		{"OLD", StateCompleted, at(-40 * day)},
		{"OLDX", StateCompleted, at(-2 * day)}, // its id starts with OLD's
		{"RECENT", StateCanceled, at(-2 * day)},
		{"ACTIVE", StateScanning, nil},
	}
	for _, r := range runs {
		put(kvRuns, r.id, RunRecord{ID: r.id, Site: "lab", State: r.state, Created: t0.Add(-50 * day), Updated: t0.Add(-50 * day),
			Finished: r.ended, Deadline: t0.Add(100 * day), Ranges: []string{"127.77.209.0/30"}})
		for _, ip := range []string{"127.77.209.1", "127.77.209.2"} {
			put(kvHosts, hostKey(r.id, ip), Host{IP: ip, Run: r.id, Stage: stageDone})
		}
		put(kvPending, pendingKey(r.id, "host."+keySafe("127.77.209.1")), pendingGroup{Probes: map[string]*pendingProbe{
			r.id + "-p": {IP: "127.77.209.1", Step: StepClassify, Kind: "snmp_get", Deadline: t0.Add(100 * day)}}})
	}
	put(kvRuns, "other", map[string]int{"x": 1})

	keys := func(kv jetstream.KeyValue) string {
		l, err := kv.ListKeys(ctx)
		if err != nil {
			return ""
		}
		var out []string
		for k := range l.Keys() {
			out = append(out, k)
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	messages := func(bucket string) uint64 {
		s, err := h.js.Stream(ctx, "KV_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	incarnation := func(now time.Time) func() {
		cfg := DefaultConfig()
		cfg.DataDir, cfg.Replica = h.dataDir, "hub"
		cctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = Run(cctx, cfg, Deps{NC: h.nc, JS: h.js, CurveKey: h.hub, Clock: clock.NewFake(now)})
		}()
		return func() { stop(); <-done }
	}
	want := func(what string, kv jetstream.KeyValue, bucket, keysWant string) {
		t.Helper()
		eventually(t, 20*time.Second, func() error {
			if got := keys(kv); got != keysWant {
				return fmt.Errorf("%s: keys %q, want %q", what, got, keysWant)
			}
			// no delete marker left behind: one message per key
			if n, k := messages(bucket), len(strings.Fields(keysWant)); n != uint64(k) {
				return fmt.Errorf("%s: %d messages in the bucket for %d keys", what, n, k)
			}
			return nil
		})
	}
	hostsOf := func(ids ...string) string {
		var out []string
		for _, id := range ids {
			out = append(out, hostKey(id, "127.77.209.1"), hostKey(id, "127.77.209.2"))
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}

	stop := incarnation(t0)
	want("first pass: run records", kvRuns, bus.KVRuns, "ACTIVE OLDX RECENT other")
	want("first pass: hosts", kvHosts, KVHosts, hostsOf("ACTIVE", "OLDX", "RECENT"))
	want("first pass: pending groups", kvPending, KVPending, pendingKey("ACTIVE", "host."+keySafe("127.77.209.1")))
	var out struct {
		Runs []RunView `json:"runs"`
	}
	h.request(ctx, "runs_ls", struct{}{}, &out)
	if len(out.Runs) != 3 {
		t.Fatalf("runs_ls after the first pass: %d runs, want 3", len(out.Runs))
	}
	stop()

	// 29 days on: RECENT and OLDX ended 31 days ago
	stop = incarnation(t0.Add(29 * day))
	defer stop()
	want("after the retention: run records", kvRuns, bus.KVRuns, "ACTIVE other")
	want("after the retention: hosts", kvHosts, KVHosts, hostsOf("ACTIVE"))
	if err := bus.Request(ctx, h.nc, Service, "run_get", map[string]string{"id": "RECENT"}, nil); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("run_get of a pruned run: %v, want not found", err)
	}
}
