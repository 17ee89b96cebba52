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

// Setup returns OTLP/HTTP providers configured by the standard OTEL_EXPORTER_OTLP_* variables
// (endpoint, headers, timeout, TLS): traces when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, metrics when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is; no-op providers otherwise, so a newcomer's
// `outpost up` sends nothing anywhere (and a traces-only setting does not make the metric
// exporter fall back to its default localhost:4318).
func Setup(ctx context.Context, service, version string) (Providers, error) {
	all := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	traces := all || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	metrics := all || os.Getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != ""
	p := Noop()
	if !traces && !metrics {
		return p, nil
	}
	// schemaless: the SDK default resource carries its own semconv schema, which a fixed
	// version here would conflict with on every otel upgrade
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(service), semconv.ServiceVersion(version)))
	if err != nil {
		return Providers{}, fmt.Errorf("telemetry resource: %w", err)
	}
	var stops []func(context.Context) error
	if traces {
		te, err := otlptracehttp.New(ctx)
		if err != nil {
			return Providers{}, fmt.Errorf("otlp trace exporter (OTEL_EXPORTER_OTLP_*): %w", err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(te), sdktrace.WithResource(res))
		p.Tracer = tp
		stops = append(stops, tp.Shutdown)
	}
	if metrics {
		me, err := otlpmetrichttp.New(ctx)
		if err != nil {
			return Providers{}, fmt.Errorf("otlp metric exporter (OTEL_EXPORTER_OTLP_*): %w", err)
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(me)), sdkmetric.WithResource(res))
		p.Meter = mp
		stops = append(stops, mp.Shutdown)
	}
	p.Shutdown = func(ctx context.Context) error {
		var errs []error
		for _, stop := range stops {
			errs = append(errs, stop(ctx))
		}
		return errors.Join(errs...)
	}
	return p, nil
}
