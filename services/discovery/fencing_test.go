package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/outpost-dev/outpost/libs/bus"
)

// The fencing test's frozen replica runs in a child process (this test binary, running
// TestFrozenReplicaChild) so that SIGSTOP freezes all of it: its lease renewals included.
const (
	childEnv     = "DISCOVERY_FENCING_CHILD_URL"
	childSeedEnv = "DISCOVERY_FENCING_CHILD_HUB_SEED"
	childDirEnv  = "DISCOVERY_FENCING_CHILD_DIR"
	// childSharedEnv: the child runs with ShareRuns (its run's own lease fences it)
	childSharedEnv = "DISCOVERY_FENCING_CHILD_SHARED"
)

// selfStop freezes its process (SIGSTOP) the first time a run is about to write a turn
// that publishes classify probes: hosts touched, probes registered, nothing written yet.
type selfStop struct{ once sync.Once }

func (s *selfStop) At(p Point, _ string) {
	if p == PointWriteClassify {
		s.once.Do(func() { _ = syscall.Kill(os.Getpid(), syscall.SIGSTOP) })
	}
}

// TestFrozenReplicaChild is the child's part of TestFencedReplicaWritesNothing.
func TestFrozenReplicaChild(t *testing.T) {
	url := os.Getenv(childEnv)
	if url == "" {
		t.Skip("run by TestFencedReplicaWritesNothing")
	}
	hub, err := nkeys.FromCurveSeed([]byte(os.Getenv(childSeedEnv)))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = os.Getenv(childDirEnv)
	cfg.Tick = 50 * time.Millisecond
	cfg.Replica = "replica-a"
	cfg.ActiveLease = 2 * time.Second
	cfg.Hooks = &selfStop{}
	cfg.ShareRuns = os.Getenv(childSharedEnv) == "1"
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	_ = Run(context.Background(), cfg, Deps{NC: nc, JS: js, CurveKey: hub, Logger: log})
}

// syncBuffer is a child's stderr, read while it is written.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// publishLog records every JetStream publish on the server (core subscriptions see them
// all) and which were stored: a publish's ack comes back on its reply subject, whose prefix
// tells the connection (JetStream context) that published it.
type publishLog struct {
	mu   sync.Mutex
	pubs []publishSeen
	byTo map[string]int // reply subject → index in pubs
}

type publishSeen struct {
	subject, reply string
	fence          uint64
	stored         bool // acked without error and not as a duplicate
}

func watchPublishes(t *testing.T, nc *nats.Conn) *publishLog {
	l := &publishLog{byTo: map[string]int{}}
	// one channel for every subscription: messages come out in the order the server sent
	// them, so an ack is never seen before the publish it answers. (Not ">": a watcher on
	// every subject would answer for missing services, and requests would wait forever.)
	ch := make(chan *nats.Msg, 1<<16)
	for _, subj := range []string{"$KV.>", "probe.>", "cmdb.ingest.>", "_INBOX.>"} {
		sub, err := nc.ChanSubscribe(subj, ch)
		if err != nil {
			t.Fatal(err)
		}
		_ = sub.SetPendingLimits(-1, -1)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	go func() {
		for m := range ch {
			l.record(m)
		}
	}()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *publishLog) record(m *nats.Msg) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.HasPrefix(m.Subject, "_INBOX.") {
		var ack struct {
			Stream    string          `json:"stream"`
			Duplicate bool            `json:"duplicate"`
			Error     json.RawMessage `json:"error"`
		}
		if json.Unmarshal(m.Data, &ack) != nil || ack.Stream == "" || ack.Error != nil || ack.Duplicate {
			return
		}
		if i, ok := l.byTo[m.Subject]; ok {
			l.pubs[i].stored = true
		}
		return
	}
	if m.Reply == "" {
		return
	}
	var f struct {
		Fence uint64 `json:"fence"`
	}
	_ = json.Unmarshal(m.Data, &f)
	l.byTo[m.Reply] = len(l.pubs)
	l.pubs = append(l.pubs, publishSeen{subject: m.Subject, reply: m.Reply, fence: f.Fence})
}

// prefixOf is the connection part of a reply subject (all but its last token).
func prefixOf(reply string) string { return reply[:strings.LastIndexByte(reply, '.')+1] }

// TestFencedReplicaWritesNothing freezes the active replica (SIGSTOP, a child process) in
// the middle of a turn, past its lease; the standby takes over; then the frozen replica is
// resumed: it finds its lease expired and writes nothing — no run, host or pending record,
// no probe, no payload.
//
// Two cases. Woken long after (the standby completed the run meanwhile): nothing on the
// server moves once it wakes. Woken while the standby serves, within the frozen turn's
// own 30 s deadline: that turn goes on at once, so only the fence can stop it — every
// publish on the server is watched, and none from the woken replica (its connection is
// known by the reply subjects of its writes before the freeze) may be stored.
//
// Both cases again with ShareRuns: both replicas active, the frozen one's run taken over
// by the other once the run's own lease expired; that lease's token fences the woken one.
func TestFencedReplicaWritesNothing(t *testing.T) {
	for _, c := range []struct {
		name       string
		wakeWhileB bool
		shared     bool
	}{
		{name: "woken after the standby completed the run"},
		{name: "woken while the standby serves", wakeWhileB: true},
		{name: "shared runs, woken after the other replica completed the run", shared: true},
		{name: "shared runs, woken while the other replica serves", wakeWhileB: true, shared: true},
	} {
		t.Run(c.name, func(t *testing.T) { fencedReplica(t, "127.77.226.0/24", 16, c.wakeWhileB, c.shared) })
	}
}

func fencedReplica(t *testing.T, labRange string, hosts int, wakeWhileB, shared bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, labRange, hosts)
	wnc, err := h.srv.Connect("publish-watch") // its own connection: nothing of the harness's
	if err != nil {
		t.Fatal(err)
	}
	defer wnc.Close()
	pubs := watchPublishes(t, wnc)
	seed, _ := h.hub.Seed()
	var stderr syncBuffer
	child := exec.Command(os.Args[0], "-test.run=^TestFrozenReplicaChild$", "-test.count=1", "-test.timeout=10m")
	child.Env = append(os.Environ(), childEnv+"="+h.srv.ClientURL(), childSeedEnv+"="+string(seed), childDirEnv+"="+h.dataDir)
	// what the woken replica logs once it found its lease lost
	stoodDown := "another discovery replica is active"
	if shared {
		child.Env = append(child.Env, childSharedEnv+"=1")
		stoodDown = "discovery run lease lost"
	}
	child.Stderr, child.Stdout = &stderr, &stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = child.Process.Kill()
		_ = child.Wait()
		if t.Failed() {
			t.Logf("child replica's log:\n%s", stderr.String())
		}
	}()
	eventually(t, 20*time.Second, func() error { return bus.Request(ctx, h.nc, Service, "runs_ls", struct{}{}, nil) })
	h.addLabCredentials(ctx, "")
	var st StartReply
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
	eventually(t, 60*time.Second, func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child.Process.Pid))
		if err != nil {
			return err
		}
		if f := strings.Fields(string(b)); len(f) < 3 || f[2] != "T" {
			return fmt.Errorf("replica a is not frozen yet (%v)", f[:3])
		}
		return nil
	})
	// the frozen replica's connection: the one that wrote run state before the freeze (only
	// it served until now)
	childPrefix := ""
	pubs.mu.Lock()
	for _, p := range pubs.pubs {
		if strings.HasPrefix(p.subject, "$KV."+bus.KVRuns+".") && p.fence > 0 && p.stored {
			childPrefix = prefixOf(p.reply)
			break
		}
	}
	pubs.mu.Unlock()
	if childPrefix == "" {
		t.Fatal("no run state written by replica a before it froze")
	}

	if shared {
		h.startShared(ctx, "replica-b", 2*time.Second) // stopped by the test's cleanup
	} else {
		stopB := h.startStandbyReplica(ctx, "replica-b", 2*time.Second)
		defer stopB()
	}
	mark := 0
	if wakeWhileB {
		// replica b serves: it wrote run state of its own
		eventually(t, 20*time.Second, func() error {
			pubs.mu.Lock()
			defer pubs.mu.Unlock()
			for _, p := range pubs.pubs {
				if strings.HasPrefix(p.subject, "$KV."+bus.KVRuns+".") && p.stored && prefixOf(p.reply) != childPrefix {
					return nil
				}
			}
			return fmt.Errorf("replica b wrote no run state yet")
		})
		pubs.mu.Lock()
		mark = len(pubs.pubs)
		pubs.mu.Unlock()
		woke := len(stderr.String())
		if err := child.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		waitStoodDown(t, &stderr, woke, stoodDown)
	}
	v := h.waitRun(ctx, st.Run, 100*time.Second)
	h.checkAgainstManifest(ctx, v)

	if wakeWhileB {
		pubs.mu.Lock()
		defer pubs.mu.Unlock()
		var wrote []string
		for _, p := range pubs.pubs[mark:] {
			if prefixOf(p.reply) == childPrefix && p.stored && !strings.HasPrefix(p.subject, "$KV."+bus.KVLeases+".") {
				wrote = append(wrote, fmt.Sprintf("%s (fence %d)", p.subject, p.fence))
			}
		}
		if len(wrote) > 0 {
			t.Fatalf("the fenced replica wrote %d messages after it woke up, e.g. %v", len(wrote), wrote[:min(len(wrote), 5)])
		}
		return
	}

	// what replica b left: nothing of it moves any more
	streams := []string{"KV_" + bus.KVRuns, "KV_" + KVHosts, "KV_" + KVPending, bus.StreamProbes, bus.StreamCMDB}
	snapshot := func() string {
		var out []string
		for _, name := range streams {
			s, err := h.js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s@%d", name, s.CachedInfo().State.LastSeq))
		}
		return strings.Join(out, " ")
	}
	before := snapshot()
	eventually(t, 10*time.Second, func() error {
		time.Sleep(500 * time.Millisecond)
		if now := snapshot(); now != before {
			before = now
			return fmt.Errorf("still moving: %s", now)
		}
		return nil
	})

	woke := len(stderr.String())
	if err := child.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// a resumed replica finds out it lost the lease, drops what it held in memory, stops
	// serving and stands by
	waitStoodDown(t, &stderr, woke, stoodDown)
	if after := snapshot(); after != before {
		t.Fatalf("the fenced replica wrote after it woke up:\nbefore %s\nafter  %s", before, after)
	}
	// (any replica may answer: the woken one reads the run from KV once it stood down)
	if v2 := h.waitRun(ctx, st.Run, 30*time.Second); v2.State != StateCompleted || v2.Counters != v.Counters {
		t.Fatalf("run changed after replica a woke up: %s %+v, was %+v", v2.State, v2.Counters, v.Counters)
	}
}

// waitStoodDown waits for the woken replica to log that it stood down, in what it logged
// after it woke (from offset on): the same line logged at its start (a first lease read
// that failed under load reads as another replica being active) must not count, or the
// test would go on while the woken replica still holds the run in memory and answers
// run_get from it.
func waitStoodDown(t *testing.T, stderr *syncBuffer, offset int, line string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		if !strings.Contains(stderr.String()[offset:], line) {
			return fmt.Errorf("replica a has not stood down yet (no %q in its log since it woke)", line)
		}
		return nil
	})
}
