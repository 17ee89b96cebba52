package bridge

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/httprequest"
)

// TestResultCarriesTheProbesTrace: a bridge without a tracer (no span per probe) still
// sends each result back with the trace its probe came with.
func TestResultCarriesTheProbesTrace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newHubRig(t, ctx, "127.77.250.30")
	params, _ := json.Marshal(httprequest.Params{Scheme: "http", Port: r.port, Path: "/traced"})
	p := &envelope.Probe{ID: "traced-1", Run: "run-1", App: "orchestration", Site: "lab", Priority: envelope.PriorityStandard,
		Kind: httprequest.Kind, Capability: httprequest.Capability, Target: r.target, Params: params, Deadline: time.Now().Add(time.Minute)}
	msg, span, err := bus.NewPublisher(r.js, "/services/test", nil).Message(ctx,
		bus.ProbeSubject(p.Site, p.Priority, p.Capability, bus.ProbeLane(p.App)), envelope.Meta{ID: p.ID}, p)
	if err != nil {
		t.Fatal(err)
	}
	span.End()
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	msg.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if _, err := r.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	br := startBridge(t, r, t.TempDir(), "br-1", true, true)
	if !isNoopTracer(br.b.tracer()) {
		t.Fatal("the test bridge has a tracer; this test is about running without one")
	}
	within(t, 30*time.Second, "result at the hub", func() bool { return len(r.resultsOf()) == 1 })
	info, err := r.results.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.results.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get("traceparent"); !strings.Contains(got, traceID) {
		t.Fatalf("the result's traceparent is %q, want trace %s (the probe's)", got, traceID)
	}
}
