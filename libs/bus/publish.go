package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/telemetry"
)

// Publisher publishes envelope bodies to JetStream with CloudEvents headers, Nats-Msg-Id
// (= ce-id, so retries are deduplicated) and the caller's trace context.
type Publisher struct {
	js     jetstream.JetStream
	source string
	tp     trace.TracerProvider
	noop   bool
	// sites caches which applications each site's bridges serve (PublishProbe).
	sites siteBridgesCache
}

var noopSpan = trace.SpanFromContext(context.Background()) // a no-op span

// NewPublisher returns a publisher whose messages carry ce-source = source
// (envelope.ServiceSource or envelope.AgentSource). tp may be nil.
func NewPublisher(js jetstream.JetStream, source string, tp trace.TracerProvider) *Publisher {
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	_, noop := tp.(tracenoop.TracerProvider)
	return &Publisher{js: js, source: source, tp: tp, noop: noop}
}

// Message builds the NATS message for body: headers, trace context and JSON payload.
// meta may be zero; its ID, source and time are filled in.
func (p *Publisher) Message(ctx context.Context, subject string, meta envelope.Meta, body envelope.Body) (*nats.Msg, trace.Span, error) {
	if meta.Source == "" {
		meta.Source = p.source
	}
	if meta.Time.IsZero() {
		meta.Time = time.Now().UTC()
	}
	h, data, err := envelope.Encode(meta, body)
	if err != nil {
		return nil, nil, err
	}
	if p.noop {
		// Tracing is off: no span to start, but a caller's trace context still travels.
		telemetry.Propagator.Inject(ctx, telemetry.HeaderCarrier(h))
		return &nats.Msg{Subject: subject, Header: h, Data: data}, noopSpan, nil
	}
	_, span := telemetry.StartProducer(ctx, p.tp, subject, telemetry.HeaderCarrier(h))
	return &nats.Msg{Subject: subject, Header: h, Data: data}, span, nil
}

// Publish sends one message and waits for the stream's ack.
func (p *Publisher) Publish(ctx context.Context, subject string, meta envelope.Meta, body envelope.Body) (*jetstream.PubAck, error) {
	msg, span, err := p.Message(ctx, subject, meta, body)
	if err != nil {
		return nil, err
	}
	defer span.End()
	ack, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, fmt.Errorf("publish %s: %w", subject, storeFull(subject, err))
	}
	return ack, nil
}

// Batch publishes many messages asynchronously and tracks every ack, for bulk work (scan
// chunks, import rows). Wait reports every message the stream did not confirm.
//
// Acks are collected as they arrive by one goroutine, in publish order, so a batch of a
// million messages holds only the client's async window in memory, not a future per message.
type Batch struct {
	p       *Publisher
	pending chan pending
	done    chan struct{}
	mu      sync.Mutex
	n       int
	errs    []error
}

type pending struct {
	subject string
	id      string
	f       jetstream.PubAckFuture
	span    trace.Span
}

// ackTimeout bounds the wait for one async publish's ack, so Wait returns even when the
// connection drops mid-batch. Resending with the same ids is safe: they are deduplicated.
const ackTimeout = 30 * time.Second

// Batch starts an async batch. Call Wait exactly once, at the end.
func (p *Publisher) Batch() *Batch {
	b := &Batch{p: p, pending: make(chan pending, 4096), done: make(chan struct{})}
	go b.collect()
	return b
}

func (b *Batch) collect() {
	defer close(b.done)
	// One timer for the whole batch, re-armed only when it fires: resetting a timer per
	// message would cost more than waiting on the ack itself.
	timeout := time.NewTimer(ackTimeout)
	defer timeout.Stop()
	progress := time.Now()
	for pf := range b.pending {
	wait:
		select {
		case <-pf.f.Ok():
			progress = time.Now()
		case <-timeout.C:
			if since := time.Since(progress); since < ackTimeout {
				timeout.Reset(ackTimeout - since)
				goto wait
			}
			timeout.Reset(ackTimeout)
			pf.span.SetStatus(codes.Error, "no ack")
			b.mu.Lock()
			b.errs = append(b.errs, fmt.Errorf("publish %s id %s: no ack from the stream within %s", pf.subject, pf.id, ackTimeout))
			b.mu.Unlock()
		case err := <-pf.f.Err():
			pf.span.SetStatus(codes.Error, err.Error())
			b.mu.Lock()
			b.errs = append(b.errs, fmt.Errorf("publish %s id %s: %w", pf.subject, pf.id, storeFull(pf.subject, err)))
			b.mu.Unlock()
		}
		pf.span.End()
	}
}

// Add queues one message; it blocks when the client's async window is full.
func (b *Batch) Add(ctx context.Context, subject string, meta envelope.Meta, body envelope.Body) error {
	msg, span, err := b.p.Message(ctx, subject, meta, body)
	if err != nil {
		return err
	}
	var f jetstream.PubAckFuture
	for {
		// A full async window is backpressure, not a failure: wait for acks and go on.
		f, err = b.p.js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Second))
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		span.End()
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	b.mu.Lock()
	b.n++
	b.mu.Unlock()
	select {
	case b.pending <- pending{subject: subject, id: msg.Header.Get(envelope.HeaderMsgID), f: f, span: span}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Len is the number of messages queued so far.
func (b *Batch) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// Wait blocks until every queued message is acked or failed, and returns the failures
// (each naming its subject and message id) joined. A publish that gets no answer fails with
// the client's async publish timeout, so Wait always returns.
func (b *Batch) Wait(ctx context.Context) error {
	close(b.pending)
	select {
	case <-b.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return errors.Join(b.errs...)
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// ProbeRoute is the subject of a probe's lane, once an approved bridge of its site is known
// to serve its application (the check PublishProbe makes), for publishers that send probes
// asynchronously.
func ProbeRoute(ctx context.Context, js jetstream.JetStream, pub *Publisher, p *envelope.Probe) (string, error) {
	lane := ProbeLane(p.App)
	sb, found, err := pub.sites.lookup(ctx, js, p.Site)
	if err != nil {
		return "", fmt.Errorf("probe %s: read the bridges of site %s: %w", p.ID, p.Site, err)
	}
	if found {
		if err := sb.CheckServed(lane); err != nil {
			return "", err
		}
	}
	return ProbeSubject(p.Site, p.Priority, p.Capability, lane), nil
}

// PublishProbe sends a probe to its site's work queue
// (probe.<site>.<priority>.<capability>.<lane>) with a per-message TTL equal to its deadline,
// so a probe nobody could take in time expires instead of running late. Its ce-id (=
// Nats-Msg-Id) is the probe id. A probe of an application no approved bridge of its site
// serves (SiteBridges) fails at once with a 503 saying so, instead of waiting for its
// deadline; a site that never had an approved bridge queues its probes until one comes.
func PublishProbe(ctx context.Context, js jetstream.JetStream, pub *Publisher, p *envelope.Probe) error {
	ttl := time.Until(p.Deadline)
	if ttl < time.Second {
		return Errorf(400, "probe %s: deadline already passed", p.ID)
	}
	subject, err := ProbeRoute(ctx, js, pub, p)
	if err != nil {
		return err
	}
	msg, span, err := pub.Message(ctx, subject, envelope.Meta{ID: p.ID, Run: p.Run}, p)
	if err != nil {
		return err
	}
	defer span.End()
	msg.Header.Set("Nats-TTL", ttl.Round(time.Second).String())
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish probe %s: %w", p.ID, storeFull(msg.Subject, err))
	}
	return nil
}

// ErrStoreFull: the stream (or bucket) is at a limit with DiscardNew and refuses writes
// until it drains; the capacity watch (libs/bus/capacity) raises an event about it. The
// writer keeps what it wanted to write and tries again later.
var ErrStoreFull = errors.New("stream full: writes are refused until it drains (see the store_full event on event.hub.bus)")

// IsStoreFull reports whether err is a write refused by a full stream.
func IsStoreFull(err error) bool { return errors.Is(err, ErrStoreFull) }

// storeFull marks the server's "maximum … exceeded" refusal of a write to subject as
// ErrStoreFull, naming the stream of the stores table that refused it.
func storeFull(subject string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == 10077 || // JSStreamStoreFailedF
		strings.Contains(apiErr.Description, "maximum") && strings.Contains(apiErr.Description, "exceeded")) {
		return fmt.Errorf("%s: %w: %w", StreamOfSubject(subject), ErrStoreFull, err)
	}
	return err
}
