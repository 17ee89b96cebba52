package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Providers are passed explicitly to whatever traces or measures; nothing global.
type Providers struct {
	Tracer trace.TracerProvider
	Meter  metric.MeterProvider
	// Shutdown flushes and stops the exporters.
	Shutdown func(context.Context) error
}

// Noop returns providers that record nothing (tests, or no OTLP endpoint).
func Noop() Providers {
	return Providers{Tracer: tracenoop.NewTracerProvider(), Meter: metricnoop.NewMeterProvider(),
		Shutdown: func(context.Context) error { return nil }}
}

// Setup returns OTLP/HTTP trace and metric providers when OTEL_EXPORTER_OTLP_ENDPOINT (or the
// signal-specific variables) is set, and no-op providers otherwise — so a newcomer's
// `outpost up` sends nothing anywhere. The exporters read the standard OTEL_* variables.
func Setup(ctx context.Context, service, version string) (Providers, error) {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return Noop(), nil
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(service), semconv.ServiceVersion(version)))
	if err != nil {
		return Providers{}, fmt.Errorf("telemetry resource: %w", err)
	}
	te, err := otlptracehttp.New(ctx)
	if err != nil {
		return Providers{}, fmt.Errorf("otlp trace exporter: %w", err)
	}
	me, err := otlpmetrichttp.New(ctx)
	if err != nil {
		return Providers{}, fmt.Errorf("otlp metric exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(te), sdktrace.WithResource(res))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(me)), sdkmetric.WithResource(res))
	return Providers{Tracer: tp, Meter: mp, Shutdown: func(ctx context.Context) error {
		return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx))
	}}, nil
}
