package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
)

// sharedReplica is a replica with ShareRuns on its own NATS connection, so that a test can
// kill it: the connection closed, it renews no lease and writes nothing, like a dead
// process; its runs go to the others when their leases expire.
type sharedReplica struct {
	name   string
	cancel context.CancelFunc
	done   chan error
	closeC func()
}

func (h *harness) startShared(ctx context.Context, name string, ttl time.Duration) *sharedReplica {
	nc, err := h.srv.Connect(name)
	if err != nil {
		h.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = h.dataDir
	cfg.Tick = 50 * time.Millisecond
	cfg.Replica = name
	cfg.ActiveLease = ttl
	cfg.ShareRuns = true
	cctx, cancel := context.WithCancel(ctx)
	r := &sharedReplica{name: name, cancel: cancel, done: make(chan error, 1), closeC: nc.Close}
	log := slog.New(slog.NewTextHandler(&h.replicaLog, &slog.HandlerOptions{Level: slog.LevelInfo})).With("replica", name)
	go func() { r.done <- Run(cctx, cfg, Deps{NC: nc, JS: js, CurveKey: h.hub, Logger: log}) }()
	h.t.Cleanup(func() { r.stop(h.t, false) })
	return r
}

// stop ends the replica: gracefully (it saves its runs and gives their leases up), or killed
// (its connection closed first: nothing saved, nothing given up).
func (r *sharedReplica) stop(t *testing.T, kill bool) {
	if r.cancel == nil {
		return
	}
	if kill {
		r.closeC()
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil && !kill {
			t.Errorf("replica %s: Run: %v", r.name, err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("replica %s: Run did not return within 60 s", r.name)
	}
	r.closeC()
}

// runHolder is the replica holding run id's lease ("" when none).
func (h *harness) runHolder(ctx context.Context, id string) string {
	kv, err := h.js.KeyValue(ctx, bus.KVLeases)
	if err != nil {
		return ""
	}
	e, err := kv.Get(ctx, RunLeaseKey(id))
	if err != nil {
		return ""
	}
	return string(e.Value())
}

// checkRange checks a finished run of part of the lab (ranges of single addresses): every
// live host of the manifest in them has the manifest's class.
func (h *harness) checkRange(ctx context.Context, v RunView, ranges []string) {
	t := h.t
	t.Helper()
	var full RunView
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := bus.Request(rctx, h.nc, Service, "run_get", IDRequest{ID: v.ID}, &full)
	cancel()
	if err != nil {
		t.Fatalf("run_get %s: %v", v.ID, err)
	}
	if full.State != StateCompleted {
		t.Fatalf("run %s: %s (%s) errors %v", v.ID, full.State, full.Reason, full.Errors)
	}
	classes := map[string]string{}
	for _, hb := range full.Hosts {
		classes[hb.IP] = hb.Class
	}
	live := 0
	for _, mh := range h.lab.Manifest().Hosts {
		if !slices.Contains(ranges, mh.IP+"/32") {
			continue
		}
		if mh.Class != "" {
			live++
		}
		if classes[mh.IP] != mh.Class {
			t.Errorf("run %s, %s (%s): class %q, manifest %q", v.ID, mh.IP, mh.Name, classes[mh.IP], mh.Class)
		}
	}
	if live == 0 {
		t.Fatalf("the lab has no live host in %v: the test proves nothing", ranges)
	}
	if full.Counters.Classified != live {
		t.Errorf("run %s: classified %d, manifest has %d live hosts in %v; %+v; errors %v", v.ID, full.Counters.Classified, live, ranges, full.Counters, full.Errors)
	}
}

// TestReplicasShareRuns: two active replicas and two runs started through one of them: each
// replica owns one run (its lease), and both runs complete with every host right.
func TestReplicasShareRuns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.101.0/24", 24)
	// a 10 s lease: a replica starved of CPU on a loaded machine must not lose it mid-test
	a := h.startShared(ctx, "replica-a", 10*time.Second)
	b := h.startShared(ctx, "replica-b", 10*time.Second)
	// both replicas are members before the runs start, so the first one's share is one run
	eventually(t, 60*time.Second, func() error {
		kv, err := h.js.KeyValue(ctx, bus.KVLeases)
		if err != nil {
			return err
		}
		for _, r := range []*sharedReplica{a, b} {
			if _, err := kv.Get(ctx, memberPrefix+r.name); err != nil {
				return fmt.Errorf("replica %s is no member yet: %v", r.name, err)
			}
		}
		return bus.Request(ctx, h.nc, Service, "runs_ls", struct{}{}, nil)
	})
	h.addLabCredentials(ctx, "")
	// the lab fills its range from the start: .1 to .24, split in two runs of 12 addresses
	halves := make([][]string, 2)
	for i := range 24 {
		halves[i/12] = append(halves[i/12], fmt.Sprintf("127.77.101.%d/32", i+1))
	}
	var ids []string
	for _, p := range halves {
		var st StartReply
		h.request(ctx, "start", StartRequest{Site: "lab", Ranges: p}, &st)
		ids = append(ids, st.Run)
	}
	// each replica owns one of the runs while they go (the first holder seen of each: a
	// run's lease is given up when it finishes)
	holders := map[string]string{}
	eventually(t, 60*time.Second, func() error {
		for _, id := range ids {
			if who := h.runHolder(ctx, id); who != "" && holders[id] == "" {
				holders[id] = who
			}
			// while each run is owned by one replica, either answers run_get of it (the
			// other from the shared record): a run that exists is never "not found"
			var v RunView
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := bus.Request(rctx, h.nc, Service, "run_get", IDRequest{ID: id}, &v)
			cancel()
			if err != nil && strings.Contains(err.Error(), "not found") {
				t.Fatalf("run_get %s while it runs (leases %v): %v", id, holders, err)
			}
		}
		a, b := holders[ids[0]], holders[ids[1]]
		if a == "" || b == "" || a == b {
			return fmt.Errorf("run leases held by %q and %q; want one run per replica", a, b)
		}
		return nil
	})
	for i, id := range ids {
		v := h.waitRun(ctx, id, 180*time.Second)
		h.checkRange(ctx, v, halves[i])
	}
	// either replica answers run_get of either run (the requests are spread over both): the
	// one that did not own it reads the shared record, and says the same as the owner did
	for _, id := range ids {
		var first RunView
		for n := range 8 {
			var v RunView
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := bus.Request(rctx, h.nc, Service, "run_get", IDRequest{ID: id}, &v)
			cancel()
			if err != nil {
				t.Fatalf("run_get %s (request %d of 8): %v", id, n+1, err)
			}
			if n == 0 {
				first = v
			}
			if v.State != StateCompleted || v.Counters != first.Counters || len(v.Hosts) != len(first.Hosts) {
				t.Errorf("run_get %s (request %d): %s, %+v, %d hosts; the first answer said %s, %+v, %d hosts", id, n+1,
					v.State, v.Counters, len(v.Hosts), first.State, first.Counters, len(first.Hosts))
			}
		}
	}
	// a finished run's lease is given up
	for _, id := range ids {
		if who := h.runHolder(ctx, id); who != "" {
			t.Errorf("run %s finished, its lease still held by %q", id, who)
		}
	}
}

// TestSharedReplicaKilledMidRun: the replica owning a run dies mid-run (its connection
// closed: no lease renewal, nothing saved, nothing given up); the other takes the run over
// once its lease expires and completes it with every host right.
func TestSharedReplicaKilledMidRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.102.0/24", 24)
	a := h.startShared(ctx, "replica-a", 10*time.Second)
	eventually(t, 60*time.Second, func() error { return bus.Request(ctx, h.nc, Service, "runs_ls", struct{}{}, nil) })
	h.addLabCredentials(ctx, "")
	var st StartReply
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st) // only replica a answers: its run
	eventually(t, 60*time.Second, func() error {
		if who := h.runHolder(ctx, st.Run); who != "replica-a" {
			return fmt.Errorf("run lease held by %q", who)
		}
		var v RunView
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := bus.Request(rctx, h.nc, Service, "run_get", IDRequest{ID: st.Run}, &v); err != nil {
			return err
		}
		if v.Counters.Alive == 0 {
			return fmt.Errorf("run %s: nothing alive yet (%s)", st.Run, v.State)
		}
		return nil
	})
	b := h.startShared(ctx, "replica-b", 10*time.Second)
	_ = b
	a.stop(t, true)
	eventually(t, 90*time.Second, func() error {
		who := h.runHolder(ctx, st.Run)
		if who == "replica-b" {
			return nil
		}
		var v RunView
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := bus.Request(rctx, h.nc, Service, "run_get", IDRequest{ID: st.Run}, &v); err == nil && terminalState(v.State) {
			return errors.New("run " + st.Run + " finished before replica b held it: replica a was not killed mid-run")
		}
		return fmt.Errorf("run lease held by %q", who)
	})
	v := h.waitRun(ctx, st.Run, 240*time.Second)
	h.checkAgainstManifest(ctx, v)
	if !strings.Contains(h.replicaLog.String(), "discovery run taken") {
		t.Error("replica b's log does not say it took the run")
	}
}
