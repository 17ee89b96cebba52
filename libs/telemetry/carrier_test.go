package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

func TestTraceParentRoundTrip(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("t").Start(context.Background(), "root")
	defer span.End()
	sc := span.SpanContext()

	stored := TraceParent(ctx)
	if stored == "" {
		t.Fatal("TraceParent: empty for a recording span")
	}
	got := trace.SpanContextFromContext(WithTraceParent(context.Background(), stored))
	if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsRemote() {
		t.Errorf("WithTraceParent(%q) = %v, want the span %v as a remote parent", stored, got, sc)
	}
	if id := TraceID(stored); id != sc.TraceID().String() {
		t.Errorf("TraceID = %q, want %q", id, sc.TraceID())
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-0000000000000000-01"} {
		if TraceID(bad) != "" || trace.SpanContextFromContext(WithTraceParent(context.Background(), bad)).IsValid() {
			t.Errorf("traceparent %q: accepted", bad)
		}
	}
	if TraceParent(context.Background()) != "" {
		t.Error("TraceParent without a span: not empty")
	}
}

// A server span is the child of the caller's context carried in the headers, also when
// the process records nothing (the context still goes on).
func TestStartServerJoinsTheCallersTrace(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	cctx, caller := tp.Tracer("t").Start(context.Background(), "caller")
	defer caller.End()
	h := map[string][]string{}
	Propagator.Inject(cctx, HeaderCarrier(h))
	if _, ok := h["traceparent"]; !ok {
		t.Fatalf("header keys %v: want lower-case traceparent", h)
	}
	for name, p := range map[string]trace.TracerProvider{"sdk": tp, "noop": tracenoop.NewTracerProvider()} {
		ctx, span := StartServer(context.Background(), p, "svc.x.y", HeaderCarrier(h))
		span.End()
		if got := trace.SpanContextFromContext(ctx).TraceID(); got != caller.SpanContext().TraceID() {
			t.Errorf("%s: server span in trace %s, want the caller's %s", name, got, caller.SpanContext().TraceID())
		}
	}
	// the HTTP carrier (canonical header keys) works the same
	hh := propagation.HeaderCarrier{}
	Propagator.Inject(cctx, hh)
	ctx, span := StartServer(context.Background(), tp, "GET /x", hh)
	span.End()
	if trace.SpanContextFromContext(ctx).TraceID() != caller.SpanContext().TraceID() {
		t.Error("HTTP headers: trace not joined")
	}
}

func TestSetupIsOffWithoutEndpoint(t *testing.T) {
	for _, c := range []struct {
		env            map[string]string
		traces, meters bool
	}{
		{nil, false, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}, true, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:1/v1/metrics"}, false, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, true, true},
	} {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
			t.Setenv(k, c.env[k])
		}
		p, err := Setup(context.Background(), "test", "v0")
		if err != nil {
			t.Fatal(err)
		}
		_, tracesOff := p.Tracer.(tracenoop.TracerProvider)
		if tracesOff == c.traces {
			t.Errorf("%v: traces on = %v, want %v", c.env, !tracesOff, c.traces)
		}
		_, sdk := p.Meter.(interface{ ForceFlush(context.Context) error })
		if sdk != c.meters {
			t.Errorf("%v: metrics on = %v, want %v", c.env, sdk, c.meters)
		}
		_ = p.Shutdown(context.Background())
	}
}
