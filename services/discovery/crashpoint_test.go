package discovery

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// crashHook kills its service incarnation the first time a run reaches point: it closes
// the incarnation's own NATS connection there, synchronously, so nothing the incarnation
// does afterwards reaches the bus — what a SIGKILL at that instant leaves behind.
type crashHook struct {
	point   Point
	nc      *nats.Conn
	once    sync.Once
	crashed chan struct{}
}

func (c *crashHook) At(p Point, _ string) {
	if p != c.point {
		return
	}
	c.once.Do(func() {
		c.nc.Close()
		close(c.crashed)
	})
}

// startIncarnation runs the service as replica "hub" on a connection of its own, with
// hooks; stop cancels it and waits for Run to return (its error is not checked: a crashed
// incarnation fails on its closed connection).
func (h *harness) startIncarnation(ctx context.Context, nc *nats.Conn, hooks Hooks) (stop func()) {
	js, err := jetstream.New(nc)
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = h.dataDir
	cfg.Tick = 50 * time.Millisecond
	cfg.Replica = "hub"
	cfg.Hooks = hooks
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = Run(cctx, cfg, Deps{NC: nc, JS: js, CurveKey: h.hub}) }()
	return func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			h.t.Error("discovery Run did not return")
		}
	}
}

// TestCrashPoints kills the service right after each step of a run has taken effect on the
// bus — a scan burst, a classify burst, an explore burst, a payload published, a receipt
// applied — then starts a new incarnation over the same bus state: it resumes the run and
// every host of the lab ends as the manifest says, each with its payload sent.
func TestCrashPoints(t *testing.T) {
	cases := []struct {
		point Point
		lab   string
	}{
		{PointScanBurst, "127.77.221.0/24"},
		{PointClassifyBurst, "127.77.222.0/24"},
		{PointExploreBurst, "127.77.223.0/24"},
		{PointPayload, "127.77.224.0/24"},
		{PointReceipt, "127.77.225.0/24"},
	}
	for _, tc := range cases {
		t.Run(string(tc.point), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := newHarness(ctx, t, tc.lab, 16)
			nc, err := h.srv.Connect("discovery-incarnation-1")
			if err != nil {
				t.Fatal(err)
			}
			hook := &crashHook{point: tc.point, nc: nc, crashed: make(chan struct{})}
			stop := h.startIncarnation(ctx, nc, hook)
			eventually(t, 10*time.Second, func() error { return bus.Request(ctx, h.nc, Service, "runs_ls", struct{}{}, nil) })
			h.addLabCredentials(ctx, "")
			var st StartReply
			h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
			select {
			case <-hook.crashed:
			case <-time.After(90 * time.Second):
				t.Fatalf("run %s never reached %s", st.Run, tc.point)
			}
			stop()

			nc2, err := h.srv.Connect("discovery-incarnation-2")
			if err != nil {
				t.Fatal(err)
			}
			defer nc2.Close()
			stop2 := h.startIncarnation(ctx, nc2, nil)
			defer stop2()
			v := h.waitRun(ctx, st.Run, 150*time.Second)
			h.checkAgainstManifest(ctx, v)
		})
	}
}

// checkAgainstManifest: the run completed, every host of the lab has the manifest's class,
// and each classified host's payload reached the CMDB stream, none for a dead address.
func (h *harness) checkAgainstManifest(ctx context.Context, v RunView) {
	t := h.t
	t.Helper()
	if v.State != StateCompleted {
		t.Fatalf("run %s: %s (%s) errors %v", v.ID, v.State, v.Reason, v.Errors)
	}
	classes := map[string]string{}
	for _, hb := range v.Hosts {
		classes[hb.IP] = hb.Class
	}
	m := h.lab.Manifest()
	live := 0
	for _, mh := range m.Hosts {
		if mh.Class != "" {
			live++
		}
		if classes[mh.IP] != mh.Class {
			var hv RunView
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = bus.Request(rctx, h.nc, Service, "run_get", IDRequest{ID: v.ID, Host: mh.IP}, &hv)
			cancel()
			t.Errorf("%s (%s): class %q, manifest %q; host %+v", mh.IP, mh.Name, classes[mh.IP], mh.Class, hv.Host)
		}
	}
	if v.Counters.Classified != live {
		t.Errorf("classified %d, manifest has %d live hosts; %+v; errors %v", v.Counters.Classified, live, v.Counters, v.Errors)
	}
	h.mu.Lock()
	roots := map[string]*envelope.CIPayload{}
	links := map[string]bool{}
	for _, p := range h.payloads {
		if len(p.Relations) > 0 && p.Relations[0].Type == "connected_to" {
			links[p.Items[0].NativeKey+"|"+p.Items[1].NativeKey] = true
			continue
		}
		roots[p.Items[0].NativeKey] = p
	}
	h.mu.Unlock()
	for _, mh := range m.Hosts {
		p, ok := roots[mh.IP]
		if ok != (mh.Class != "") {
			t.Errorf("%s (%q): payload sent %t", mh.IP, mh.Class, ok)
		}
		if !ok || mh.Class != "linux_server" {
			continue
		}
		// a Linux server's adapters come from its explore probe: a payload sent without its
		// explore results lacks them
		macs := map[string]bool{}
		for _, it := range p.Items {
			if mac, _ := it.Attributes["mac_address"].(string); mac != "" {
				macs[strings.ToLower(mac)] = true
			}
		}
		for _, mac := range mh.MACs {
			if !macs[strings.ToLower(mac)] {
				t.Errorf("%s (%s): payload lacks adapter %s (explore results lost?); has %v", mh.IP, mh.Class, mac, macs)
			}
		}
	}
	if len(links) != len(m.Neighbours) {
		t.Errorf("LLDP links sent %d, manifest has %d neighbours", len(links), len(m.Neighbours))
	}
}
