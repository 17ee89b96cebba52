package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/httprequest"
	"github.com/outpost-dev/outpost/services/bridge/outbox"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	httpkind "github.com/outpost-dev/outpost/services/bridge/probe/httprequest"
)

// hubRig is a hub's JetStream (PROBES work queue with the site's http consumer, RESULTS) and
// a lab target that counts the requests it serves: how many times a probe really executed.
type hubRig struct {
	t        *testing.T
	ctx      context.Context
	srv      *bus.Server
	js       jetstream.JetStream
	results  jetstream.Stream
	consumer string
	target   string
	port     int
	hits     atomic.Int64
}

func newHubRig(t *testing.T, ctx context.Context, ip string) *hubRig {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "hub", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("hub")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r := &hubRig{t: t, ctx: ctx, srv: srv, target: ip}
	r.js, _ = jetstream.New(nc)
	if _, err := r.js.CreateStream(ctx, jetstream.StreamConfig{Name: bus.StreamProbes, Subjects: []string{"probe.>"},
		Retention: jetstream.WorkQueuePolicy, AllowMsgTTL: true}); err != nil {
		t.Fatal(err)
	}
	r.consumer = bus.ProbeConsumer("lab", envelope.PriorityStandard, "orch-http")
	// AckWait far below the bridge's keep-alive interval: the hub redelivers a probe every
	// second while the bridge holds it — the redeliveries under test.
	if _, err := r.js.CreateOrUpdateConsumer(ctx, bus.StreamProbes, jetstream.ConsumerConfig{Durable: r.consumer,
		FilterSubject: bus.ProbeSubject("lab", envelope.PriorityStandard, httprequest.Capability, bus.AppOrchestration),
		AckPolicy:     jetstream.AckExplicitPolicy, AckWait: time.Second}); err != nil {
		t.Fatal(err)
	}
	r.results, err = r.js.CreateStream(ctx, jetstream.StreamConfig{Name: "RESULTS", Subjects: []string{"result.>"}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	r.port = ln.Addr().(*net.TCPAddr).Port
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := r.hits.Add(1)
		fmt.Fprintf(w, "executed %d\n", n)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return r
}

// publish sends one http_request probe with id to the target (orchestration's probe id is
// its idempotency key: run + step + attempt).
func (r *hubRig) publish(id string) {
	r.t.Helper()
	params, _ := json.Marshal(httprequest.Params{Scheme: "http", Port: r.port, Path: "/restart"})
	p := &envelope.Probe{ID: id, Run: "run-1", App: "orchestration", Site: "lab", Priority: envelope.PriorityStandard,
		Kind: httprequest.Kind, Capability: httprequest.Capability, Target: r.target, Params: params, Deadline: time.Now().Add(time.Minute)}
	if err := bus.PublishProbe(r.ctx, r.js, bus.NewPublisher(r.js, "/services/test", nil), p); err != nil {
		r.t.Fatal(err)
	}
}

// resultsOf reads every result message in RESULTS.
func (r *hubRig) resultsOf() []*envelope.Result {
	r.t.Helper()
	info, err := r.results.Info(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []*envelope.Result
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := r.results.GetMsg(r.ctx, seq)
		if err != nil {
			continue
		}
		_, res, err := envelope.DecodeInto[*envelope.Result](m.Header, m.Data)
		if err != nil {
			r.t.Fatalf("result seq %d: %v", seq, err)
		}
		out = append(out, res)
	}
	return out
}

// queued is how many probes the consumer still holds (waiting or unacked).
func (r *hubRig) queued() int {
	info, err := r.js.Stream(r.ctx, bus.StreamProbes)
	if err != nil {
		r.t.Fatal(err)
	}
	si, err := info.Info(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	return int(si.State.Msgs)
}

// bridgeProc is one bridge "process" over a data dir: the real work loop (pull, execute,
// outbox, executed-probe store) against the rig's hub, without enrollment.
type bridgeProc struct {
	b    *Bridge
	stop func()
}

// startBridge starts a bridge over dir; forward=false leaves results in its outbox (a hub
// out of reach); ack=false keeps the forwarder from telling the bridge (the probe is not
// acked although the hub has its result: a crash right after the forward). Its results all
// go through the outbox (no direct sends: see startBridgeWith).
func startBridge(t *testing.T, r *hubRig, dir, name string, forward, ack bool) *bridgeProc {
	t.Helper()
	return startBridgeWith(t, r, dir, name, rigOpts{forward: forward, ack: ack})
}

// rigOpts: forward and ack as for startBridge; direct gives the bridge a connection of its
// own to the hub for direct sends (outbox.Send), waiting directTimeout (default the
// outbox's) for the hub's ack.
type rigOpts struct {
	forward, ack, direct bool
	directTimeout        time.Duration
	// sendSlots, when set, replaces resultsInFlight (the bridge's bound on final results
	// on their way to the hub once their workers are free).
	sendSlots int
}

func startBridgeWith(t *testing.T, r *hubRig, dir, name string, o rigOpts) *bridgeProc {
	t.Helper()
	forward, ack := o.forward, o.ack
	ctx := r.ctx
	cfg := Config{Site: "lab", Name: name, DataDir: dir, Pools: map[string]int{envelope.PriorityInteractive: 2, envelope.PriorityExpedited: 2, envelope.PriorityStandard: 4}}
	b, err := newBridge(ctx, cfg, Deps{Kinds: []probe.Factory{httpkind.NewFactory()}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	b.allow.setSite([]string{"127.77.0.0/16"}, nil)
	if o.sendSlots > 0 {
		b.sendSlots = make(chan struct{}, o.sendSlots)
	}
	sent := b.onSent
	if !ack {
		sent = nil
	}
	b.box, err = outbox.Open(ctx, outbox.Config{Dir: dir, MaxBytes: 16 << 20, Sent: sent, Clock: b.clock, DirectTimeout: o.directTimeout})
	if err != nil {
		t.Fatal(err)
	}
	b.js = r.js
	if o.direct {
		if b.nc, err = r.srv.Connect("bridge " + name); err != nil {
			t.Fatal(err)
		}
	}
	wctx, stopWork := context.WithCancel(ctx)
	fctx, stopForward := context.WithCancel(ctx)
	var wg, inflight sync.WaitGroup
	if forward {
		wg.Add(1)
		go func() { defer wg.Done(); _ = b.box.Forward(fctx, r.js) }()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.pull(wctx, b.pools[envelope.PriorityStandard], r.consumer, &inflight)
	}()
	var once sync.Once
	p := &bridgeProc{b: b, stop: func() {
		once.Do(func() {
			stopWork()
			inflight.Wait()
			stopForward()
			wg.Wait()
			b.workMu.Lock()
			for _, c := range b.claims {
				for _, d := range c.deliveries {
					d.stop() // the process is gone: its keep-alives stop with it
				}
			}
			b.workMu.Unlock()
			b.box.Close()
			if b.nc != nil {
				b.nc.Close()
			}
		})
	}}
	t.Cleanup(p.stop)
	return p
}

func within(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRedeliveredProbeExecutesOnce: however a probe comes back to a bridge — redelivered
// while it holds it, or to the next bridge process over the same data dir after a crash
// before or after the hub got its result — the target sees one execution, the hub gets
// one final result, and the probe leaves the queue.
func TestRedeliveredProbeExecutesOnce(t *testing.T) {
	cases := []struct {
		name string
		// first runs the probe in a first process and returns once it has executed.
		first func(t *testing.T, r *hubRig, dir string)
	}{
		{"redelivered while the result waits in the outbox", func(t *testing.T, r *hubRig, dir string) {
			p := startBridge(t, r, dir, "br-1", false, true)
			within(t, 10*time.Second, "executed", func() bool { return r.hits.Load() == 1 })
			// The hub redelivers every second (AckWait) while the result cannot leave.
			within(t, 10*time.Second, "redelivered", func() bool { return p.b.replayed.Load() >= 2 })
			p.stop()
		}},
		{"crash after executing, before the hub had the result", func(t *testing.T, r *hubRig, dir string) {
			p := startBridge(t, r, dir, "br-1", false, true)
			within(t, 10*time.Second, "executed", func() bool { return r.hits.Load() == 1 })
			within(t, 10*time.Second, "recorded", func() bool { n, _ := p.b.box.Executed().Len(r.ctx); return n == 1 })
			p.stop()
		}},
		{"crash after the hub had the result, before the probe's ack", func(t *testing.T, r *hubRig, dir string) {
			p := startBridge(t, r, dir, "br-1", true, false)
			within(t, 10*time.Second, "result at the hub", func() bool { return len(r.resultsOf()) == 1 })
			p.stop()
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			r := newHubRig(t, ctx, "127.77.250."+strconv.Itoa(10+i))
			dir := t.TempDir()
			r.publish("run-1-restart-1")
			tc.first(t, r, dir)
			if r.queued() != 1 {
				t.Fatalf("the probe left the queue before the hub had its result (%d queued)", r.queued())
			}
			// The next process over the same data dir gets the probe again.
			p := startBridge(t, r, dir, "br-1", true, true)
			within(t, 20*time.Second, "probe acked", func() bool { return r.queued() == 0 })
			if p.b.replayed.Load() == 0 {
				t.Error("the redelivery was not answered from the executed-probe store")
			}
			if n := r.hits.Load(); n != 1 {
				t.Fatalf("the target counted %d executions, want 1", n)
			}
			within(t, 10*time.Second, "result at the hub", func() bool { return len(r.resultsOf()) >= 1 })
			res := r.resultsOf()
			if len(res) != 1 || !res[0].Final || res[0].Status != envelope.StatusOK || res[0].Attempt != 1 || res[0].ID != ResultID("run-1-restart-1", 1, 0) {
				t.Fatalf("hub results %+v, want the one final result of attempt 1", res)
			}
		})
	}
}

// TestExecutionsHaveTheirOwnResultIDs: a probe redelivered to a sibling bridge (its first
// bridge cut off past AckWait) runs again there; the two executions' results carry their
// attempt and never share an id, so neither the hub's dedup nor a reader drops or mixes one
// for the other.
func TestExecutionsHaveTheirOwnResultIDs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newHubRig(t, ctx, "127.77.250.20")
	r.publish("probe-a")
	a := startBridge(t, r, t.TempDir(), "br-a", false, true)
	within(t, 10*time.Second, "executed by br-a", func() bool { return r.hits.Load() == 1 })
	a.stop() // cut off: its result waits in its outbox
	b := startBridge(t, r, t.TempDir(), "br-b", true, true)
	within(t, 20*time.Second, "executed by br-b", func() bool { return r.queued() == 0 })
	b.stop()
	// br-a comes back and delivers its stale result too.
	startBridge(t, r, a.b.cfg.DataDir, "br-a", true, true)
	within(t, 20*time.Second, "both executions' results at the hub", func() bool { return len(r.resultsOf()) == 2 })
	res := r.resultsOf()
	if res[0].ID == res[1].ID || res[0].Attempt == res[1].Attempt || res[0].Attempt == 0 || res[1].Attempt == 0 {
		t.Fatalf("two executions share an id or an attempt: %s/%d and %s/%d", res[0].ID, res[0].Attempt, res[1].ID, res[1].Attempt)
	}
}
