package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

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
}

// NewPublisher returns a publisher whose messages carry ce-source = source
// (envelope.ServiceSource or envelope.AgentSource). tp may be nil.
func NewPublisher(js jetstream.JetStream, source string, tp trace.TracerProvider) *Publisher {
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	return &Publisher{js: js, source: source, tp: tp}
}

// Message builds the NATS message for body: headers, trace context and JSON payload.
// meta may be zero; its ID, source and time are filled in.
func (p *Publisher) Message(ctx context.Context, subject string, meta envelope.Meta, body envelope.Body) (*nats.Msg, trace.Span, error) {
	if meta.Source == "" {
		meta.Source = p.source
	}
	if meta.Time.IsZero() {
		meta.Time = envelope.NewMeta("", "").Time
	}
	h, data, err := envelope.Encode(meta, body)
	if err != nil {
		return nil, nil, err
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
		return nil, fmt.Errorf("publish %s: %w", subject, err)
	}
	return ack, nil
}

// Batch publishes many messages asynchronously and tracks every ack, for bulk work (scan
// chunks, import rows). Wait reports every message the stream did not confirm.
type Batch struct {
	p       *Publisher
	mu      sync.Mutex
	futures []pending
	errs    []error
}

type pending struct {
	subject string
	id      string
	f       jetstream.PubAckFuture
	span    trace.Span
}

// Batch starts an async batch.
func (p *Publisher) Batch() *Batch { return &Batch{p: p} }

// Add queues one message; it may block when the client's async window is full.
func (b *Batch) Add(ctx context.Context, subject string, meta envelope.Meta, body envelope.Body) error {
	msg, span, err := b.p.Message(ctx, subject, meta, body)
	if err != nil {
		return err
	}
	f, err := b.p.js.PublishMsgAsync(msg)
	if err != nil {
		span.End()
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	b.mu.Lock()
	b.futures = append(b.futures, pending{subject: subject, id: msg.Header.Get(envelope.HeaderMsgID), f: f, span: span})
	b.mu.Unlock()
	return nil
}

// Len is the number of messages queued so far.
func (b *Batch) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.futures)
}

// Wait blocks until every queued message is acked or failed, and returns the failures
// (each naming its subject and message id) joined.
func (b *Batch) Wait(ctx context.Context) error {
	b.mu.Lock()
	futures := b.futures
	b.futures = nil
	b.mu.Unlock()
	var errs []error
	for _, pf := range futures {
		select {
		case <-pf.f.Ok():
		case err := <-pf.f.Err():
			pf.span.SetStatus(codes.Error, err.Error())
			errs = append(errs, fmt.Errorf("publish %s id %s: %w", pf.subject, pf.id, err))
		case <-ctx.Done():
			pf.span.End()
			return errors.Join(append(errs, ctx.Err())...)
		}
		pf.span.End()
	}
	return errors.Join(errs...)
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
