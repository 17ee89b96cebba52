package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// resultWatch collects the final results of a site's probes, by probe id.
type resultWatch struct {
	mu  sync.Mutex
	got map[string]envelope.Result
}

func watchResults(t *testing.T, js jetstream.JetStream, site string) *resultWatch {
	t.Helper()
	w := &resultWatch{got: map[string]envelope.Result{}}
	cons, err := js.OrderedConsumer(context.Background(), bus.StreamResults, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"result.*." + site + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if _, r, err := envelope.DecodeInto[*envelope.Result](m.Headers(), m.Data()); err == nil && r.Final {
			w.mu.Lock()
			w.got[r.Probe] = *r
			w.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return w
}

func (w *resultWatch) wait(t *testing.T, probe string) envelope.Result {
	t.Helper()
	var r envelope.Result
	eventually(t, 60*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		var ok bool
		if r, ok = w.got[probe]; !ok {
			return fmt.Errorf("no result for probe %s yet", probe)
		}
		return nil
	})
	return r
}

func echoProbe(app, site, msg string) *envelope.Probe {
	params, _ := json.Marshal(map[string]any{"msg": msg})
	return &envelope.Probe{ID: envelope.NewID(), Run: "apps-test", App: app, Site: site, Priority: envelope.PriorityStandard,
		Kind: "echo", Capability: "echo", Params: params, Deadline: time.Now().Add(2 * time.Minute).UTC()}
}

// A bridge run with --apps orchestration is never given a discovery probe (NATS refuses it
// the discovery lane), a discovery probe on its site fails at once saying why, and once a
// discovery bridge joins the site, discovery probes go to that one only.
func TestAppsSelection(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "dc1", "127.0.0.0/8", true)
	orch := startBridge(t, h, "dc1", "br-orch", tok, "--apps", "orchestration")
	h.waitStatus(t, "br-orch", "up")
	_, js := h.serviceConn(t)
	results := watchResults(t, js, "dc1")
	pub := bus.NewPublisher(js, envelope.ServiceSource("test"), nil)
	// The whole test's budget (two bridges, a regroup and a reconnect), not one step's.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The registry and the heartbeat tell the operator what the bridge serves.
	var ls struct {
		Agents []struct {
			Name string
			Apps []string
		}
	}
	h.mustAPI(t, "GET", "/api/v1/agents", nil, &ls)
	if len(ls.Agents) != 1 || !slices.Equal(ls.Agents[0].Apps, []string{"orchestration"}) {
		t.Fatalf("agents ls: %+v", ls)
	}

	// Discovery on a site whose only bridge serves orchestration: refused at once.
	err := bus.PublishProbe(ctx, js, pub, echoProbe("discovery", "dc1", "x"))
	var se *bus.ServiceError
	if !errors.As(err, &se) || se.Code != 503 || !strings.Contains(se.Message, "site dc1 has no bridge serving discovery") ||
		!strings.Contains(se.Message, "br-orch (orchestration)") {
		t.Fatalf("discovery probe on an orchestration-only site: %v", err)
	}
	// The importer's probes are the import application's.
	if err := bus.PublishProbe(ctx, js, pub, echoProbe("importer", "dc1", "x")); err == nil || !strings.Contains(err.Error(), "serving import") {
		t.Fatalf("import probe on an orchestration-only site: %v", err)
	}

	// One group for the site: the bridge's cells, one consumer per priority.
	orchCons := probeConsumer(t, js, "dc1", envelope.PriorityStandard, "echo", bus.AppOrchestration)
	if c := probeConsumer(t, js, "dc1", envelope.PriorityStandard, "echo", bus.LaneAdhoc); c != orchCons {
		t.Fatalf("ad-hoc probes in %s, orchestration ones in %s: one bridge, one group", c, orchCons)
	}
	if n := siteConsumers(t, js, "dc1"); len(n) != len(envelope.Priorities) {
		t.Fatalf("site consumers %v, want one per priority", n)
	}

	// A discovery probe put straight on its lane (as a hub that skipped the check would) waits
	// there, even with a consumer of that lane in place (one the per-lane layout left behind),
	// while orchestration work flows.
	legacy := bus.ProbeConsumerPrefix("dc1") + "standard_echo_discovery"
	cons, err := js.CreateOrUpdateConsumer(ctx, bus.StreamProbes, jetstream.ConsumerConfig{Durable: legacy,
		FilterSubject: bus.ProbeSubject("dc1", envelope.PriorityStandard, "echo", bus.AppDiscovery), AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	stray := echoProbe("discovery", "dc1", "stray")
	msg, span, err := pub.Message(ctx, bus.ProbeSubject("dc1", stray.Priority, "echo", bus.AppDiscovery), envelope.Meta{ID: stray.ID}, stray)
	if err != nil {
		t.Fatal(err)
	}
	span.End()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	orchestrate := func(i int) {
		t.Helper()
		p := echoProbe("orchestration", "dc1", fmt.Sprint("orch-", i))
		if err := bus.PublishProbe(ctx, js, pub, p); err != nil {
			t.Fatal(err)
		}
		if r := results.wait(t, p.ID); r.Status != envelope.StatusOK || r.Agent != "br-orch" {
			t.Fatalf("orchestration probe: %+v", r)
		}
	}
	for i := range 5 {
		orchestrate(i)
	}
	// Ad-hoc probes reach every bridge whatever it serves.
	if out := echo(t, h, "dc1", "adhoc"); len(out.Results) != 1 || out.Results[0].Agent != "br-orch" {
		t.Fatalf("ad-hoc probe: %+v", out)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Consumer != 0 || info.NumPending != 1 {
		t.Fatalf("the discovery lane was delivered %d probes (pending %d): an orchestration bridge took discovery work",
			info.Delivered.Consumer, info.NumPending)
	}

	// Not manners but permissions: the bridge's own key may not pull a discovery consumer.
	checkPulls(t, h, orch.dir, map[string]bool{orchCons: true, legacy: false})

	// A discovery bridge joins: the site's cells split into groups (ad-hoc for both, the
	// rest for one each); the per-lane leftover goes, the new discovery group takes the
	// waiting probe to the discovery bridge, and the orchestration bridge, told to reconnect,
	// pulls its new groups without a restart.
	startBridge(t, h, "dc1", "br-disc", tok, "--apps", "discovery,import")
	h.waitStatus(t, "br-disc", "up")
	if r := results.wait(t, stray.ID); r.Agent != "br-disc" {
		t.Fatalf("the waiting discovery probe: %+v", r)
	}
	p := echoProbe("discovery", "dc1", "now")
	eventually(t, 30*time.Second, func() error { return bus.PublishProbe(ctx, js, pub, p) })
	if r := results.wait(t, p.ID); r.Status != envelope.StatusOK || r.Agent != "br-disc" {
		t.Fatalf("discovery probe: %+v", r)
	}
	for i := range 3 {
		orchestrate(10 + i)
	}
	eventually(t, 30*time.Second, func() error {
		if n := siteConsumers(t, js, "dc1"); len(n) != 3*len(envelope.Priorities) || slices.Contains(n, legacy) {
			return fmt.Errorf("site consumers %v, want 3 groups per priority and no leftover", n)
		}
		return nil
	})
	adhoc := probeConsumer(t, js, "dc1", envelope.PriorityStandard, "echo", bus.LaneAdhoc)
	orchOnly := probeConsumer(t, js, "dc1", envelope.PriorityStandard, "echo", bus.AppOrchestration)
	discOnly := probeConsumer(t, js, "dc1", envelope.PriorityStandard, "echo", bus.AppDiscovery)
	if imp := probeConsumer(t, js, "dc1", envelope.PriorityStandard, "ssh", bus.AppImport); imp != discOnly {
		t.Errorf("the discovery bridge's import probes in %s, its discovery ones in %s: one group", imp, discOnly)
	}
	checkPulls(t, h, orch.dir, map[string]bool{adhoc: true, orchOnly: true, discOnly: false})
}

// siteConsumers lists the site's probe consumers.
func siteConsumers(t *testing.T, js jetstream.JetStream, site string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, bus.StreamProbes)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	names := st.ConsumerNames(ctx)
	for n := range names.Name() {
		if strings.HasPrefix(n, bus.ProbeConsumerPrefix(site)) {
			out = append(out, n)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// checkPulls connects with a bridge's key (a raw client beside the running bridge) and
// checks which consumers it may read and pull: allowed[name] true must answer, false must
// be refused by NATS.
func checkPulls(t *testing.T, h *testHub, dir string, allowed map[string]bool) {
	t.Helper()
	errs := make(chan error, 16)
	nc, err := identityConn(t, h, dir, errs)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	bjs, _ := jetstream.NewWithAPIPrefix(nc, bus.BridgeJSAPIPrefix)
	for name, ok := range allowed {
		if ok {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := bjs.Consumer(ctx, bus.StreamProbes, name)
			cancel()
			if err != nil {
				t.Errorf("its own consumer %s: %v", name, err)
			}
			continue
		}
		pull := bus.BridgeJSAPIPrefix + ".CONSUMER.MSG.NEXT." + bus.StreamProbes + "." + name
		if err := nc.Publish(pull, []byte(`{"batch":1}`)); err != nil {
			t.Fatal(err)
		}
		expectViolation(t, errs, pull)
	}
}

// --apps is checked before anything starts.
func TestAppsFlagRefusesUnknownApplication(t *testing.T) {
	t.Parallel()
	p := start(t, "outpost-bridge", "--hub", "nats://127.0.0.1:1", "--site", "dc1", "--data", t.TempDir(), "--apps", "discovery,inventory")
	err := p.cmd.Wait()
	if err == nil || !strings.Contains(p.log.String(), `--apps "inventory": not an application`) {
		t.Fatalf("exit %v, log:\n%s", err, p.log.String())
	}
}
