package hub_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/services/agents"
	"github.com/outpost-dev/outpost/services/bridge"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/echo"
	"github.com/outpost-dev/outpost/services/bridge/probe/tcpscan"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

// gatedDialer lets a bridge's first connection through and holds its second (the reconnect
// into its site's rights after approval) until the test opens the gate: what happens at the
// hub meanwhile is what a slow reconnect on a loaded machine lets happen.
type gatedDialer struct {
	dials   atomic.Int64
	held    chan struct{} // closed when the second dial waits
	release chan struct{} // closed by the test
}

func (g *gatedDialer) Dial(network, address string) (net.Conn, error) {
	if g.dials.Add(1) == 2 {
		close(g.held)
		<-g.release
	}
	return (&net.Dialer{Timeout: 5 * time.Second}).Dial(network, address)
}

// TestBridgeLearnsGroupsChangedWhileItReconnects: bridge br1 (echo and tcp) is approved with
// its site's groups as they are then (one group, its own); before it has reconnected into
// its rights, br2 (tcp only) joins and the site regroups (a tcp group for both, a group for
// br1's echo), so the callout grants br1 the new consumers and refuses the one it was told
// of. br1 must re-read its groups and pull the new consumers — it used to wait on the stale
// consumer forever, refused every 2 s (make test: TestBridgeKilledMidChunk).
func TestBridgeLearnsGroupsChangedWhileItReconnects(t *testing.T) {
	dir := t.TempDir()
	h := startWith(t, dir, func(c *hub.Config) { c.NoLocalBridge = true })
	defer h.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
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
	if err := bus.Request(ctx, nc, "agents", "site_add", agents.SiteAddRequest{Name: "dc1", Ranges: []string{"127.77.0.0/16"}, AutoApprove: true}, &site); err != nil {
		t.Fatal(err)
	}

	type running struct {
		logs  *syncBuffer
		ready chan struct{}
		done  chan error
	}
	run := func(name string, kinds []probe.Factory, opts ...nats.Option) *running {
		r := &running{logs: &syncBuffer{}, ready: make(chan struct{}), done: make(chan error, 1)}
		bc := bridge.DefaultConfig()
		bc.Hub, bc.Site, bc.Name, bc.Token, bc.DataDir = "nats://"+h.cfg.NATSAddr, "dc1", name, site.Token, filepath.Join(dir, name)
		bc.Version = "0.0.0-test"
		bctx, bstop := context.WithCancel(ctx)
		go func() {
			r.done <- bridge.Run(bctx, bc, bridge.Deps{Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
				Kinds: kinds, ConnectOptions: opts, Ready: func() { close(r.ready) }})
		}()
		t.Cleanup(func() { bstop(); <-r.done })
		return r
	}
	waitReady := func(name string, r *running, d time.Duration) {
		t.Helper()
		select {
		case <-r.ready:
		case err := <-r.done:
			t.Fatalf("%s stopped: %v\n%s", name, err, r.logs.String())
		case <-time.After(d):
			t.Fatalf("%s not pulling work within %s:\n%s", name, d, r.logs.String())
		}
	}

	gate := &gatedDialer{held: make(chan struct{}), release: make(chan struct{})}
	br1 := run("br1", []probe.Factory{echo.NewFactory(), tcpscan.NewFactory()}, nats.SetCustomDialer(gate))
	select {
	case <-gate.held: // br1 is approved and reconnecting into its rights
	case err := <-br1.done:
		t.Fatalf("br1 stopped: %v\n%s", err, br1.logs.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("br1 not approved within 90 s:\n%s", br1.logs.String())
	}
	br2 := run("br2", []probe.Factory{tcpscan.NewFactory()})
	waitReady("br2", br2, 90*time.Second) // the site has regrouped
	close(gate.release)
	waitReady("br1", br1, 90*time.Second)

	// Only br1 takes echo probes: they reach it through its new group's consumer.
	deadline := time.Now().Add(90 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 15*time.Second)
		reply, err := agentsapi.Probe.Call(pctx, nc, agentsapi.ProbeRequest{Site: "dc1", Kind: "echo",
			Params: json.RawMessage(`{"msg":"hello"}`), Priority: "interactive", Timeout: "10s"})
		pcancel()
		if err == nil && len(reply.Results) > 0 && reply.Results[len(reply.Results)-1].Error == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("echo probe not answered by br1 within 90 s after it was ready: %v %+v\nbr1 log:\n%s", err, reply, br1.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
