package telemetry

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// HeaderCarrier adapts nats.Header to OTel propagation without changing key case:
// nats.Header is case-sensitive and the W3C header is lower-case "traceparent", whereas
// propagation.HeaderCarrier would canonicalise it to "Traceparent".
type HeaderCarrier nats.Header

func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Propagator is W3C trace context plus baggage; stateless, so a package value is safe.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{})

// Tracer names the instrumentation scope of the bus.
const scope = "github.com/outpost-dev/outpost/libs/bus"

func messagingAttrs(subject string) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.destination.name", subject),
	}
}

// StartProducer starts a "send <subject>" producer span and injects its context into the carrier.
// The carrier is HeaderCarrier(h) for a nats.Header, propagation.MapCarrier for metadata.
func StartProducer(ctx context.Context, tp trace.TracerProvider, subject string, carrier propagation.TextMapCarrier) (context.Context, trace.Span) {
	ctx, span := tp.Tracer(scope).Start(ctx, "send "+subject,
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(messagingAttrs(subject)...))
	Propagator.Inject(ctx, carrier)
	return ctx, span
}

// StartConsumer extracts the producer's context from the carrier and starts a "process <subject>"
// consumer span as its child, linked to the creation context as the semantic conventions ask.
func StartConsumer(ctx context.Context, tp trace.TracerProvider, subject string, carrier propagation.TextMapCarrier) (context.Context, trace.Span) {
	parent := Propagator.Extract(ctx, carrier)
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(messagingAttrs(subject)...)}
	if sc := trace.SpanContextFromContext(parent); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	return tp.Tracer(scope).Start(parent, "process "+subject, opts...)
}

// StartServer starts a server span for one request (an HTTP call, a svc.* request) as the
// child of the caller's context carried in the request's headers.
func StartServer(ctx context.Context, tp trace.TracerProvider, name string, carrier propagation.TextMapCarrier, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := Propagator.Extract(ctx, carrier)
	return tp.Tracer(scope).Start(parent, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
}

// TraceParent is the W3C traceparent of ctx's span ("" when there is none): what a record
// keeps so work resumed later (a discovery turn, a host's payload) joins the same trace.
func TraceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// WithTraceParent returns ctx with the remote span of a stored traceparent as its parent;
// ctx unchanged when tp is empty or malformed.
func WithTraceParent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}

// TraceID is the trace id (32 hex digits) of a traceparent, "" when it has none.
func TraceID(traceparent string) string {
	sc := trace.SpanContextFromContext(WithTraceParent(context.Background(), traceparent))
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
