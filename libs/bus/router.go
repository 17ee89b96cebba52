package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/telemetry"
)

// RouterConfig configures a service's Router.
type RouterConfig struct {
	Service     string // names the DLQ subject (dlq.<service>) and the advisory queue group
	Topology    Topology
	MaxInFlight int // per handler (default 64)
	// Retries in process before the message is nacked for a later redelivery. Their total time
	// stays well under the consumer's AckWait (RetryMaxElapsed, default 5 s).
	Retries         int
	RetryInitial    time.Duration
	RetryMaxElapsed time.Duration
	// CloseTimeout bounds how long Run waits for handlers when ctx ends (default 8 s, so a
	// SIGTERM'd process exits within 10 s).
	CloseTimeout time.Duration
	Logger       *slog.Logger
	Tracer       trace.TracerProvider
	Meter        metric.MeterProvider
}

// Router is a watermill Router wired for Outpost: our JetStream Subscriber, and the
// middleware chain every consumer needs.
//
// Order (outermost first): Settle (ack/nak with JetStream) → CorrelationID → Tracing →
// PoisonQueue(DLQ) → verdict → Retry → Recoverer. A decode or Permanent error skips Retry and reaches the PoisonQueue at once; a
// transient error is retried in process, then nacked with backoff; on the consumer's last
// delivery it is dead-lettered instead.
type Router struct {
	cfg    RouterConfig
	nc     *nats.Conn
	wm     *message.Router
	sub    *Subscriber
	dlq    *DeadLetterer
	log    *slog.Logger
	mu     sync.Mutex
	topics []ConsumerSpec
}

// NewRouter builds a Router; add handlers with Handle, then Run.
func NewRouter(nc *nats.Conn, js jetstream.JetStream, cfg RouterConfig) (*Router, error) {
	if cfg.Service == "" {
		return nil, errors.New("router: service name is empty")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Tracer == nil {
		cfg.Tracer = tracenoop.NewTracerProvider()
	}
	if cfg.Retries == 0 {
		cfg.Retries = 2
	}
	if cfg.RetryInitial == 0 {
		cfg.RetryInitial = 100 * time.Millisecond
	}
	if cfg.RetryMaxElapsed == 0 {
		cfg.RetryMaxElapsed = 5 * time.Second
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = 8 * time.Second
	}
	log := cfg.Logger.With("component", "bus", "service", cfg.Service)
	wm, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, quietLogger{watermill.NewSlogLogger(log)})
	if err != nil {
		return nil, err
	}
	var meter metric.Meter
	if cfg.Meter != nil {
		meter = cfg.Meter.Meter(scope)
	}
	r := &Router{cfg: cfg, nc: nc, wm: wm, log: log,
		sub: NewSubscriber(js, SubscriberConfig{Topology: cfg.Topology, MaxInFlight: cfg.MaxInFlight, Logger: cfg.Logger, Meter: meter}),
		dlq: NewDeadLetterer(js, cfg.Service, log, meter)}
	poison, err := middleware.PoisonQueueWithFilter(r.dlq, DLQSubject(cfg.Service), func(err error) bool {
		var dl *deadLetterError
		return errors.As(err, &dl)
	})
	if err != nil {
		return nil, err
	}
	r.sub.managed = true
	retry := middleware.Retry{
		MaxRetries: cfg.Retries, InitialInterval: cfg.RetryInitial, Multiplier: 2,
		MaxInterval: time.Second, MaxElapsedTime: cfg.RetryMaxElapsed,
		ShouldRetry: func(p middleware.RetryParams) bool { return !terminal(p.Err) },
	}
	wm.AddMiddleware(
		Settle,
		middleware.CorrelationID,
		Tracing(cfg.Tracer),
		poison,
		verdict,
		retryOnFailure(retry),
		middleware.Recoverer,
	)
	return r, nil
}

const scope = "github.com/outpost-dev/outpost/libs/bus"

// retryOnFailure runs watermill's Retry only once the first attempt failed: the happy path,
// nearly every message, pays nothing for the backoff machinery.
func retryOnFailure(r middleware.Retry) message.HandlerMiddleware {
	r.MaxRetries--
	return func(h message.HandlerFunc) message.HandlerFunc {
		retrying := r.Middleware(h)
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err == nil || terminal(err) || r.MaxRetries < 0 {
				return out, err
			}
			time.Sleep(r.InitialInterval)
			return retrying(msg)
		}
	}
}

// terminal errors are not worth a retry.
func terminal(err error) bool {
	return errors.Is(err, envelope.ErrDecode) || errors.Is(err, ErrPermanent)
}

// verdict turns a handler's failure into a dead-letter when retrying cannot help: a decode or
// permanent error, or the consumer's last delivery.
func verdict(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err == nil {
			return out, nil
		}
		code := ""
		switch {
		case errors.Is(err, envelope.ErrDecode):
			code = CodeDecode
		case errors.Is(err, ErrPermanent):
			code = CodePermanent
		default:
			n, _ := strconv.Atoi(msg.Metadata.Get(MetaDelivered))
			maxN, _ := strconv.Atoi(msg.Metadata.Get(MetaMaxDeliver))
			if maxN > 0 && n >= maxN {
				code = CodeMaxDeliveries
				err = fmt.Errorf("failed on all %d deliveries, last error: %w", n, err)
			}
		}
		if code == "" {
			return out, err
		}
		msg.Metadata.Set(HeaderDLQCode, code)
		return nil, &deadLetterError{code: code, err: err}
	}
}

// Tracing starts a consumer span for each message as the child of the producer's span
// carried in its headers (now metadata), and records the handler's error on it.
func Tracing(tp trace.TracerProvider) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		if _, off := tp.(tracenoop.TracerProvider); off {
			return h // tracing is off: no span to start, nothing to pay per message
		}
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx, span := telemetry.StartConsumer(msg.Context(), tp, msg.Metadata.Get(MetaSubject), propagation.MapCarrier(msg.Metadata))
			defer span.End()
			msg.SetContext(ctx)
			out, err := h(msg)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return out, err
		}
	}
}

// HandlerFunc handles one decoded message. Return Permanent(err) when retrying cannot help.
type HandlerFunc[T envelope.Body] func(ctx context.Context, meta envelope.Meta, body T) error

// Decoded adapts a typed handler: the body is decoded strictly from the message; a body that
// cannot be decoded is dead-lettered with code "decode" without reaching the handler.
func Decoded[T envelope.Body](h HandlerFunc[T]) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		meta, body, err := envelope.DecodeIntoWith[T](msg.Metadata.Get, msg.Payload)
		if err != nil {
			return err
		}
		return h(msg.Context(), meta, body)
	}
}

// Handle registers a handler on a consumer of the topology (the topic is its durable name).
func (r *Router) Handle(name, consumer string, h message.NoPublishHandlerFunc) error {
	spec, ok := r.cfg.Topology.Consumer(consumer)
	if !ok {
		return fmt.Errorf("handler %s: consumer %q is not in the topology", name, consumer)
	}
	r.mu.Lock()
	r.topics = append(r.topics, spec)
	r.mu.Unlock()
	r.wm.AddConsumerHandler(name, consumer, r.sub, h)
	return nil
}

// Run processes messages until ctx ends, then drains: stops pulling, lets handlers finish
// (up to CloseTimeout) and returns.
func (r *Router) Run(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	topics := append([]ConsumerSpec(nil), r.topics...)
	r.mu.Unlock()
	watchErr := make(chan error, 1)
	go func() { watchErr <- r.dlq.WatchMaxDeliveries(wctx, r.nc, topics) }()
	err := r.wm.Run(ctx)
	cancel()
	return errors.Join(err, <-watchErr)
}

// Running is closed once every handler is subscribed.
func (r *Router) Running() chan struct{} { return r.wm.Running() }

// Close stops the router (Run returns).
func (r *Router) Close() error { return r.wm.Close() }

// quietLogger drops watermill's per-message debug/trace chatter and keeps the rest.
type quietLogger struct{ watermill.LoggerAdapter }

func (l quietLogger) Debug(string, watermill.LogFields) {}
func (l quietLogger) Trace(string, watermill.LogFields) {}
func (l quietLogger) With(f watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{l.LoggerAdapter.With(f)}
}
