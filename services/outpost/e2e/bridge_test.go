package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

type probeReply struct {
	Probe   string
	Results []envelope.Result
}

func echo(t *testing.T, h *testHub, site, msg string) probeReply {
	t.Helper()
	var out probeReply
	h.mustAPI(t, "POST", "/api/v1/probes", probeReq(site, "echo", map[string]any{"msg": msg}), &out)
	return out
}

// Enrollment: pending until approved; then up and working; and a bridge listens on nothing.
func TestEnrollApproveProbeOutboundOnly(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "dc1", "127.0.0.0/8", false)
	b := startBridge(t, h, "dc1", "br1", tok)
	h.waitStatus(t, "br1", "pending")
	// Approval is for admins; the probe endpoint waits for a bridge that is not allowed yet.
	h.mustAPI(t, "POST", "/api/v1/agents/br1/approve", nil, nil)
	h.waitStatus(t, "br1", "up")
	out := echo(t, h, "dc1", "hi")
	if len(out.Results) != 1 || !strings.Contains(string(out.Results[0].Data), `"msg":"hi"`) || out.Results[0].Agent != "br1" {
		t.Fatalf("echo: %+v", out)
	}
	if n := listeningSockets(t, b.proc.pid()); n != 0 {
		t.Fatalf("the bridge owns %d listening TCP or UDP sockets", n)
	}
	// Identity files are private.
	for _, f := range []string{"identity.nk", "identity.xk"} {
		st, err := os.Stat(filepath.Join(b.dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st, err)
		}
	}
	// Control: ping, pause (no work taken), resume, logs.
	var ping map[string]any
	h.mustAPI(t, "POST", "/api/v1/agents/br1/control", map[string]any{"command": "ping"}, &ping)
	if ping["ok"] != true {
		t.Fatalf("ping: %v", ping)
	}
	h.mustAPI(t, "POST", "/api/v1/agents/br1/control", map[string]any{"command": "pause"}, nil)
	h.waitStatus(t, "br1", "up") // status follows the next heartbeat; the control answer is immediate
	var logs struct{ Lines []string }
	h.mustAPI(t, "POST", "/api/v1/agents/br1/control", map[string]any{"command": "logs", "lines": 50}, &logs)
	if len(logs.Lines) == 0 || !strings.Contains(strings.Join(logs.Lines, "\n"), "paused") {
		t.Fatalf("logs: %v", logs.Lines)
	}
	h.mustAPI(t, "POST", "/api/v1/agents/br1/control", map[string]any{"command": "resume"}, nil)
	echo(t, h, "dc1", "after resume")
}

// listeningSockets counts TCP sockets in LISTEN and UDP sockets owned by pid.
func listeningSockets(t *testing.T, pid int) int {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	if len(inodes) == 0 {
		t.Fatal("no sockets at all: is it connected?")
	}
	n := 0
	for _, f := range []string{"tcp", "tcp6", "udp", "udp6"} {
		fh, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Scan()
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) < 10 || !inodes[fl[9]] {
				continue
			}
			if strings.HasPrefix(f, "udp") || fl[3] == "0A" {
				n++
			}
		}
		fh.Close()
	}
	return n
}

// identityConn connects with a bridge's own key, as a raw nats.go client (no bridge code).
func identityConn(t *testing.T, h *testHub, dir string, errs chan<- error) (*nats.Conn, error) {
	seed, err := os.ReadFile(filepath.Join(dir, "identity.nk"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return nats.Connect("nats://"+h.nats, nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(bus.InboxPrefix(pub)),
		nats.MaxReconnects(0), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
}

// Permissions are NATS's, not the bridge's manners: with site A's identity a raw client can
// neither take site B's probes nor publish B's results; pending and revoked identities get
// nothing.
func TestSitePermissions(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	tokA := h.addSite(t, "site-a", "127.0.0.0/8", true)
	tokB := h.addSite(t, "site-b", "127.0.0.0/8", true)
	a := startBridge(t, h, "site-a", "bra", tokA)
	startBridge(t, h, "site-b", "brb", tokB)
	h.waitStatus(t, "bra", "up")
	h.waitStatus(t, "brb", "up")
	// Stop A's real bridge so the raw client is the only user of A's identity.
	a.proc.kill(t)

	errs := make(chan error, 16)
	nc, err := identityConn(t, h, a.dir, errs)
	if err != nil {
		t.Fatalf("approved identity refused: %v", err)
	}
	defer nc.Close()
	_, hjs := h.serviceConn(t)
	consA := probeConsumer(t, hjs, "site-a", "interactive", "echo", bus.LaneAdhoc)
	consB := probeConsumer(t, hjs, "site-b", "interactive", "echo", bus.LaneAdhoc)
	js, _ := jetstream.NewWithAPIPrefix(nc, bus.BridgeJSAPIPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Its own site's consumer: allowed.
	if _, err := js.Consumer(ctx, bus.StreamProbes, consA); err != nil {
		t.Fatalf("own consumer: %v", err)
	}
	// Site B's consumer: no info, no pull.
	if _, err := js.Consumer(ctx, bus.StreamProbes, consB); err == nil {
		t.Fatal("site A's identity read site B's consumer")
	}
	pull := bus.BridgeJSAPIPrefix + ".CONSUMER.MSG.NEXT." + bus.StreamProbes + "." + consB
	if err := nc.Publish(pull, []byte(`{"batch":1}`)); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, pull)
	// Publishing B's results: refused.
	if err := nc.Publish(bus.ResultSubject("discovery", "site-b", "echo", "brb"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "site B's results")
	// Results in the name of another agent of its own site: refused too.
	if err := nc.Publish(bus.ResultSubject("discovery", "site-a", "echo", "other"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "another agent's results")
	// Subscribing to B's probe subject directly: refused too.
	if _, err := nc.SubscribeSync("probe.site-b.>"); err == nil {
		expectViolation(t, errs, "probe.site-b.>")
	}
	nc.Close()

	// A pending identity receives no probe.
	tokC := h.addSite(t, "site-c", "127.0.0.0/8", false)
	c := startBridge(t, h, "site-c", "brc", tokC)
	h.waitStatus(t, "brc", "pending")
	code, body := h.api(t, "POST", "/api/v1/probes", map[string]any{"site": "site-c", "kind": "echo", "params": map[string]any{"msg": "x"}, "timeout": "3s"})
	if code != 504 {
		t.Fatalf("a pending bridge answered a probe: %d %s", code, body)
	}
	c.proc.kill(t)
	errs2 := make(chan error, 16)
	pnc, err := identityConn(t, h, c.dir, errs2)
	if err != nil {
		t.Fatalf("pending identity cannot even enroll: %v", err)
	}
	pjs, _ := jetstream.NewWithAPIPrefix(pnc, bus.BridgeJSAPIPrefix)
	// (the consumer its group would have once approved: the same cells as site A's bridge)
	if _, err := pjs.Consumer(ctx, bus.StreamProbes, bus.ProbeConsumer("site-c", "interactive", groupKeyOf(consA))); err == nil {
		t.Fatal("a pending identity reached its site's consumer")
	}
	pnc.Close()

	// A revoked identity is cut off and cannot come back.
	h.mustAPI(t, "POST", "/api/v1/agents/bra/revoke", nil, nil)
	h.waitStatus(t, "bra", "revoked")
	if rc, err := identityConn(t, h, a.dir, make(chan error, 1)); err == nil {
		rc.Close()
		t.Fatal("a revoked identity connected")
	}
	code, _ = h.api(t, "POST", "/api/v1/agents/bra/approve", nil)
	if code != 409 {
		t.Fatalf("re-approving a revoked agent: %d", code)
	}
}

func expectViolation(t *testing.T, errs <-chan error, what string) {
	t.Helper()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("%s: want a permissions violation, got %v", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no permissions violation observed", what)
	}
}

// publishProbes sends n echo probes of the given delay as app "test" in standard priority.
func publishProbes(t *testing.T, js jetstream.JetStream, site string, n int, delay string) []string {
	t.Helper()
	pub := bus.NewPublisher(js, envelope.ServiceSource("test"), nil)
	ids := make([]string, n)
	ctx := context.Background()
	for i := range n {
		params, _ := json.Marshal(map[string]any{"msg": fmt.Sprint(i), "delay": delay})
		p := &envelope.Probe{ID: envelope.NewID(), Run: "run-1", App: "test", Site: site, Priority: envelope.PriorityStandard,
			Kind: "echo", Capability: "echo", Params: params, Deadline: time.Now().Add(10 * time.Minute).UTC()}
		if err := bus.PublishProbe(ctx, js, pub, p); err != nil {
			t.Fatal(err)
		}
		ids[i] = p.ID
	}
	return ids
}

// app is a consuming application: idempotent per probe, as DESIGN.md asks.
type app struct {
	mu       sync.Mutex
	recorded map[string]int // probe id → times recorded
	seen     map[string]bool
}

func runApp(t *testing.T, nc *nats.Conn, js jetstream.JetStream) *app {
	t.Helper()
	spec := bus.ConsumerSpec{Stream: bus.StreamResults, Name: "test-app", Filters: []string{"result.test.>"}}
	topo := bus.Topology{Consumers: []bus.ConsumerSpec{spec}}
	ctx, cancel := context.WithCancel(context.Background())
	if err := bus.Provision(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	a := &app{recorded: map[string]int{}, seen: map[string]bool{}}
	r, err := bus.NewRouter(nc, js, bus.RouterConfig{Service: "test", Topology: topo})
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Handle("results", "test-app", bus.Decoded(func(_ context.Context, _ envelope.Meta, res *envelope.Result) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.seen[res.ID] {
			return nil // a duplicate delivery of a result already recorded: no effect
		}
		a.seen[res.ID] = true
		if res.Final && res.Status == envelope.StatusOK {
			a.recorded[res.Probe]++
		}
		return nil
	}))
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

func (a *app) count() (distinct, twice int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, n := range a.recorded {
		distinct++
		if n > 1 {
			twice++
		}
	}
	return
}

func distinctProbesInResults(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, bus.StreamResults, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"result.test.>"}})
	if err != nil {
		t.Fatal(err)
	}
	probes := map[string]bool{}
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var r envelope.Result
			if json.Unmarshal(m.Data(), &r) == nil {
				probes[r.Probe] = true
			}
		}
		if n == 0 {
			return len(probes)
		}
	}
}

// No loss across a hub crash: 1,000 slow probes in flight on two bridges, SIGKILL the hub,
// restart it on the same data dir — every result arrives, once per probe for the app.
func TestHubCrashLosesNothing(t *testing.T) {
	t.Parallel()
	const n = 1000
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "dc1", "127.0.0.0/8", true)
	startBridge(t, h, "dc1", "br1", tok)
	startBridge(t, h, "dc1", "br2", tok)
	h.waitStatus(t, "br1", "up")
	h.waitStatus(t, "br2", "up")
	nc, js := h.serviceConn(t)
	publishProbes(t, js, "dc1", n, "150ms")
	// Let work be in flight and results in the outboxes, then crash the hub.
	eventually(t, 60*time.Second, func() error {
		if got := distinctProbesInResults(t, js); got < 100 {
			return fmt.Errorf("%d results so far", got)
		}
		return nil
	})
	nc.Close()
	h.proc.kill(t)
	time.Sleep(time.Second) // bridges keep working into their outboxes meanwhile
	h.restart(t)
	nc, js = h.serviceConn(t)
	a := runApp(t, nc, js)
	eventually(t, 3*time.Minute, func() error {
		if d, _ := a.count(); d < n {
			return fmt.Errorf("app recorded %d of %d probes", d, n)
		}
		return nil
	})
	if d, twice := a.count(); d != n || twice != 0 {
		t.Fatalf("app recorded %d distinct probes, %d more than once", d, twice)
	}
	if got := distinctProbesInResults(t, js); got != n {
		t.Fatalf("RESULTS holds %d distinct probes, want %d", got, n)
	}
}

// Failover: SIGKILL one of two bridges mid-batch; its unacked probes go to the sibling.
func TestBridgeFailover(t *testing.T) {
	t.Parallel()
	const n = 300
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "dc1", "127.0.0.0/8", true)
	b1 := startBridge(t, h, "dc1", "br1", tok)
	startBridge(t, h, "dc1", "br2", tok)
	h.waitStatus(t, "br1", "up")
	h.waitStatus(t, "br2", "up")
	nc, js := h.serviceConn(t)
	a := runApp(t, nc, js)
	publishProbes(t, js, "dc1", n, "100ms")
	eventually(t, 60*time.Second, func() error {
		if d, _ := a.count(); d < 30 {
			return fmt.Errorf("%d done", d)
		}
		return nil
	})
	b1.proc.kill(t)
	eventually(t, 2*time.Minute, func() error {
		if d, _ := a.count(); d < n {
			return fmt.Errorf("%d of %d probes completed", d, n)
		}
		return nil
	})
}

// Priorities: with the standard pool saturated by slow probes, an interactive probe is
// answered at once and heartbeats keep coming.
func TestInteractiveIsNotDelayedByStandardWork(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "dc1", "127.0.0.0/8", true)
	startBridge(t, h, "dc1", "br1", tok, "--pool-standard", "2")
	h.waitStatus(t, "br1", "up")
	_, js := h.serviceConn(t)
	// 6 probes of 12 s on 2 workers: the standard pool is busy for 36 s.
	publishProbes(t, js, "dc1", 6, "12s")
	eventually(t, 30*time.Second, func() error {
		var out struct {
			Agents []struct {
				Pools map[string]envelope.PoolStats
			}
		}
		h.mustAPI(t, "GET", "/api/v1/agents", nil, &out)
		if len(out.Agents) == 0 || out.Agents[0].Pools["standard"].Busy != 2 {
			return fmt.Errorf("standard pool not saturated yet: %+v", out.Agents)
		}
		return nil
	})
	start := time.Now()
	echo(t, h, "dc1", "urgent")
	// Generous (a loaded CI machine): it would take ≥ 12 s if it queued behind standard work.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("interactive echo took %s behind a saturated standard pool", d)
	}
	// Heartbeats keep their 10 s cadence: the last one is never older than a beat and a half.
	for range 3 {
		var out struct {
			Agents []struct {
				LastHeartbeat time.Time `json:"last_heartbeat"`
			}
		}
		h.mustAPI(t, "GET", "/api/v1/agents", nil, &out)
		if age := time.Since(out.Agents[0].LastHeartbeat); age > 15*time.Second {
			t.Fatalf("last heartbeat %s ago while the standard pool is saturated", age)
		}
		time.Sleep(4 * time.Second)
	}
}

// Bad input: a malformed probe goes to the DLQ and the bridge keeps working; params beyond a
// limit come back as an error naming the limit; a target outside the allowed ranges is denied.
func TestBadInput(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "dc1", "127.77.0.0/16", true)
	startBridge(t, h, "dc1", "br1", tok, "--allow", "127.77.1.0/24")
	h.waitStatus(t, "br1", "up")
	_, js := h.serviceConn(t)
	ctx := context.Background()
	if _, err := js.Publish(ctx, bus.ProbeSubject("dc1", "interactive", "echo", bus.LaneAdhoc), []byte("{not a probe")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		st, _ := js.Stream(ctx, bus.StreamDLQ)
		info, err := st.Info(ctx)
		if err != nil || info.State.Msgs != 1 {
			return fmt.Errorf("DLQ: %v %v", info, err)
		}
		m, err := st.GetLastMsgForSubject(ctx, bus.BridgeDLQSubject("dc1"))
		if err != nil {
			return err
		}
		if m.Header.Get(bus.HeaderDLQCode) != bus.CodeDecode {
			return fmt.Errorf("DLQ code %q", m.Header.Get(bus.HeaderDLQCode))
		}
		return nil
	})
	echo(t, h, "dc1", "still working")
	var out probeReply
	h.mustAPI(t, "POST", "/api/v1/probes", probeReq("dc1", "echo", map[string]any{"msg": "x", "delay": "2h"}), &out)
	if r := out.Results[0]; r.Status != envelope.StatusError || r.Error == nil || r.Error.Code != "bad_params" || !strings.Contains(r.Error.Message, "limit") {
		t.Fatalf("params beyond a limit: %+v", r)
	}
	for _, target := range []string{"127.77.2.5", "127.0.0.1", "127.77.1.0/23"} {
		out = probeReply{}
		h.mustAPI(t, "POST", "/api/v1/probes", map[string]any{"site": "dc1", "kind": "echo", "target": target, "timeout": "10s"}, &out)
		if r := out.Results[0]; r.Status != envelope.StatusDenied || !strings.Contains(r.Error.Message, "outside") {
			t.Fatalf("target %s: %+v", target, r)
		}
	}
	h.mustAPI(t, "POST", "/api/v1/probes", map[string]any{"site": "dc1", "kind": "echo", "target": "127.77.1.9", "params": map[string]any{"msg": "in"}}, &out)
	if out.Results[0].Status != envelope.StatusOK {
		t.Fatalf("allowed target: %+v", out.Results[0])
	}
}

// probeConsumer is the name of the site's consumer that takes (priority, capability, lane)
// probes, once the agents service has declared it.
func probeConsumer(t testing.TB, js jetstream.JetStream, site, priority, capability, lane string) string {
	t.Helper()
	var name string
	eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		name, err = bus.FindProbeConsumer(ctx, js, site, priority, capability, lane)
		if err != nil {
			return fmt.Errorf("site %s %s %s.%s: %w", site, priority, capability, lane, err)
		}
		return nil
	})
	return name
}

// groupKeyOf is the group key in a probe consumer's name (bus.ProbeConsumer).
func groupKeyOf(consumer string) string { return consumer[strings.LastIndex(consumer, "_")+1:] }
