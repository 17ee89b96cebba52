package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/services/agents"
	"github.com/outpost-dev/outpost/services/bridge"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/echo"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

// panicky is the echo kind with a bug: it panics when asked to echo "panic" (a test-only
// kind; it keeps echo's contract so the hub accepts its probes).
type panicky struct{ probe.Factory }

func (f panicky) Create(ctx context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	r, err := f.Factory.Create(ctx, set, cfg)
	return panickyRunner{r}, err
}

type panickyRunner struct{ probe.Runner }

func (r panickyRunner) Run(ctx context.Context, req probe.Request, emit probe.Emit) (any, error) {
	if strings.Contains(string(req.Params), `"panic"`) {
		var m map[string]string
		m["boom"] = "nil map" // a real bug's panic, not a contrived one
	}
	return r.Runner.Run(ctx, req, emit)
}

// syncBuffer is a log sink the bridge writes from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPanickingKindDoesNotKillTheBridge: a kind that panics answers its probe with code
// "panic" (stack in the bridge log, counted in heartbeats), the probe is acked rather than
// redelivered, and the same bridge goes on answering probes.
func TestPanickingKindDoesNotKillTheBridge(t *testing.T) {
	dir := t.TempDir()
	h := startWith(t, dir, func(c *hub.Config) { c.NoLocalBridge = true })
	defer h.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	auth, err := hub.ServiceAuth(dir)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+h.cfg.NATSAddr, auth)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var site agents.SiteAddReply
	if err := bus.Request(ctx, nc, "agents", "site_add", agents.SiteAddRequest{Name: "dc1", Ranges: []string{"127.0.0.0/8"}, AutoApprove: true}, &site); err != nil {
		t.Fatal(err)
	}
	heartbeats := make(chan envelope.Heartbeat, 100)
	hbSub, err := nc.Subscribe(bus.HeartbeatSubject("dc1", "br-1"), func(m *nats.Msg) {
		var hb envelope.Heartbeat
		if json.Unmarshal(m.Data, &hb) == nil {
			select {
			case heartbeats <- hb:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer hbSub.Unsubscribe()

	logs := &syncBuffer{}
	bc := bridge.DefaultConfig()
	bc.Hub, bc.Site, bc.Name, bc.Token, bc.DataDir = "nats://"+h.cfg.NATSAddr, "dc1", "br-1", site.Token, filepath.Join(dir, "bridge")
	bc.Version = "0.0.0-test"
	bctx, bstop := context.WithCancel(ctx)
	bdone := make(chan error, 1)
	go func() {
		bdone <- bridge.Run(bctx, bc, bridge.Deps{Logger: slog.New(slog.NewJSONHandler(logs, nil)),
			Kinds: []probe.Factory{panicky{echo.NewFactory()}}, HeartbeatEvery: 100 * time.Millisecond})
	}()
	defer func() { bstop(); <-bdone }()

	ask := func(msg string) agentsapi.ProbeReply {
		t.Helper()
		var reply agentsapi.ProbeReply
		deadline := time.Now().Add(30 * time.Second)
		for {
			reply, err = agentsapi.Probe.Call(ctx, nc, agentsapi.ProbeRequest{Site: "dc1", Kind: "echo",
				Params: json.RawMessage(`{"msg":"` + msg + `"}`), Priority: "interactive", Timeout: "5s"})
			if err == nil || time.Now().After(deadline) {
				break
			}
			select {
			case err := <-bdone:
				t.Fatalf("the bridge stopped: %v\n%s", err, logs.String())
			case <-time.After(100 * time.Millisecond):
			}
		}
		if err != nil {
			t.Fatalf("probe %q: %v\n%s", msg, err, logs.String())
		}
		return reply
	}
	ask("before") // the bridge is up and pulling
	r := ask("panic")
	final := r.Results[len(r.Results)-1]
	if final.Status != envelope.StatusError || final.Error == nil || final.Error.Code != probes.CodePanic {
		t.Fatalf("a panicking kind answered %+v (error %+v), want status error with code %q", final, final.Error, probes.CodePanic)
	}
	if strings.Contains(final.Error.Message, "goroutine") {
		t.Errorf("the stack went into the result (it belongs in the bridge log): %s", final.Error.Message)
	}
	after := ask("after")
	if f := after.Results[len(after.Results)-1]; f.Status != envelope.StatusOK {
		t.Fatalf("the bridge's next probe: %+v", f)
	}
	out := logs.String()
	if !strings.Contains(out, "probe kind panicked") || !strings.Contains(out, "panickyRunner.Run") {
		t.Errorf("no panic with its stack in the bridge log:\n%s", out)
	}
	// Counted, and acked: nothing left on the site's consumers to crash a sibling.
	eventually(t, 10*time.Second, func() error {
		select {
		case hb := <-heartbeats:
			if hb.ProbePanics != 1 {
				return fmt.Errorf("heartbeat counts %d panics, want 1", hb.ProbePanics)
			}
			return nil
		case <-time.After(time.Second):
			return errors.New("no heartbeat")
		}
	})
	js, _ := jetstream.New(nc)
	eventually(t, 10*time.Second, func() error {
		cons, err := bus.FindProbeConsumer(ctx, js, "dc1", envelope.PriorityInteractive, "echo", bus.LaneAdhoc)
		if err != nil {
			return err
		}
		c, err := js.Consumer(ctx, bus.StreamProbes, cons)
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
			return fmt.Errorf("consumer %s: %d pending, %d unacked, %d redelivered", cons, info.NumPending, info.NumAckPending, info.NumRedelivered)
		}
		return nil
	})
}
