package discovery

import (
	"bytes"
	"context"
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

// TestFencedReplicaWritesNothing freezes the active replica (SIGSTOP, a child process) in
// the middle of a turn, past its lease; the standby takes over and completes the run; then
// the frozen replica is resumed: it finds its lease expired and writes nothing — no run,
// host or pending record, no probe, no payload.
func TestFencedReplicaWritesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.226.0/24", 16)
	seed, _ := h.hub.Seed()
	var stderr syncBuffer
	child := exec.Command(os.Args[0], "-test.run=^TestFrozenReplicaChild$", "-test.count=1", "-test.timeout=10m")
	child.Env = append(os.Environ(), childEnv+"="+h.srv.ClientURL(), childSeedEnv+"="+string(seed), childDirEnv+"="+h.dataDir)
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

	stopB := h.startReplica(ctx, "replica-b", 2*time.Second)
	defer stopB()
	v := h.waitRun(ctx, st.Run, 100*time.Second)
	h.checkAgainstManifest(ctx, v)

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

	if err := child.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// a resumed replica finds out it lost the lease, stops serving and stands by
	eventually(t, 30*time.Second, func() error {
		if !strings.Contains(stderr.String(), "another discovery replica is active") {
			return fmt.Errorf("replica a has not stood down yet")
		}
		return nil
	})
	if after := snapshot(); after != before {
		t.Fatalf("the fenced replica wrote after it woke up:\nbefore %s\nafter  %s", before, after)
	}
	if v2 := h.waitRun(ctx, st.Run, time.Second); v2.State != StateCompleted || v2.Counters != v.Counters {
		t.Fatalf("run changed after replica a woke up: %s %+v, was %+v", v2.State, v2.Counters, v.Counters)
	}
}
