package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/outpost-dev/outpost/libs/errs"
)

// Headers of a dead-lettered message: why, and where it came from, so `outpost dlq` can show
// it and retry it to its original subject.
const (
	HeaderDLQReason     = "outpost-dlq-reason"
	HeaderDLQCode       = "outpost-dlq-code"
	HeaderDLQSubject    = "outpost-dlq-subject"
	HeaderDLQStream     = "outpost-dlq-stream"
	HeaderDLQSeq        = "outpost-dlq-seq"
	HeaderDLQDeliveries = "outpost-dlq-deliveries"
	HeaderDLQConsumer   = "outpost-dlq-consumer"
	HeaderDLQService    = "outpost-dlq-service"
	HeaderDLQTime       = "outpost-dlq-time"
)

// Dead-letter codes: stable, for filtering and for dashboards; rows of the error table
// (libs/errs).
const (
	CodeDecode        = string(errs.Decode)        // the body or headers cannot be read: never retried
	CodePermanent     = string(errs.Permanent)     // the handler said retrying cannot help
	CodeMaxDeliveries = string(errs.MaxDeliveries) // failed on every delivery
)

// ErrPermanent marks a handler error that no retry can fix (validation, a reference to
// something that does not exist). Wrap with Permanent.
var ErrPermanent = errors.New("permanent")

type permanentError struct{ err error }

func (e permanentError) Error() string        { return e.err.Error() }
func (e permanentError) Unwrap() error        { return e.err }
func (e permanentError) Is(target error) bool { return target == ErrPermanent }

// Permanent wraps err so the message is dead-lettered at once instead of retried.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// deadLetterError is what the final-attempt middleware returns for a message that must go to
// the DLQ; its text (the DLQ reason) starts with its code.
type deadLetterError struct {
	code string
	err  error
}

func (e *deadLetterError) Error() string { return e.code + ": " + e.err.Error() }
func (e *deadLetterError) Unwrap() error { return e.err }

// SourceRef says where a message lives in its source stream.
type SourceRef struct {
	Stream, Consumer, Subject string
	Seq                       uint64
	Deliveries                uint64
	// Part names one part of the message (one event of a batch) when only that part is
	// poison: the dead letter holds that part alone, its id says which one (so several
	// parts of one message are several dead letters), and the message stays in its stream,
	// its other parts being good.
	Part string
}

// DeadLetterer copies a poison message to DLQ (dlq.<service>.<origin>) with its reason and origin, then
// deletes it from its source stream so it neither blocks a work queue nor gets replayed.
type DeadLetterer struct {
	js      jetstream.JetStream
	service string
	log     *slog.Logger
	counter metric.Int64Counter

	mu      sync.Mutex
	streams map[string]jetstream.Stream
}

// NewDeadLetterer returns the dead-letterer of a service. meter may be nil.
func NewDeadLetterer(js jetstream.JetStream, service string, log *slog.Logger, meter metric.Meter) *DeadLetterer {
	d := &DeadLetterer{js: js, service: service, log: log, streams: map[string]jetstream.Stream{}}
	if meter != nil {
		d.counter, _ = meter.Int64Counter("outpost.bus.dead_lettered", metric.WithDescription("messages moved to the DLQ"))
	}
	return d
}

// DeadLetter moves one message. It is idempotent: the DLQ copy's Nats-Msg-Id is derived from
// the source stream and sequence, and deleting an already deleted message is not an error.
func (d *DeadLetterer) DeadLetter(ctx context.Context, src SourceRef, h nats.Header, data []byte, code, reason string) error {
	out := make(nats.Header, len(h)+10)
	for k, v := range h {
		out[k] = v
	}
	set := func(k, v string) { out[k] = []string{v} }
	id := "dlq:" + src.Stream + ":" + strconv.FormatUint(src.Seq, 10)
	if src.Part != "" {
		id += ":" + src.Part
	}
	set(nats.MsgIdHdr, id)
	set(HeaderDLQCode, code)
	set(HeaderDLQReason, reason)
	set(HeaderDLQSubject, src.Subject)
	set(HeaderDLQStream, src.Stream)
	set(HeaderDLQSeq, strconv.FormatUint(src.Seq, 10))
	set(HeaderDLQDeliveries, strconv.FormatUint(src.Deliveries, 10))
	set(HeaderDLQConsumer, src.Consumer)
	set(HeaderDLQService, d.service)
	set(HeaderDLQTime, time.Now().UTC().Format(time.RFC3339Nano))
	subject := DLQOriginSubject(d.service, Origin(src.Subject))
	if _, err := d.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: out, Data: data}); err != nil {
		return fmt.Errorf("dead-letter %s seq %d to %s: %w", src.Stream, src.Seq, subject, err)
	}
	if src.Seq > 0 && src.Part == "" {
		st, err := d.stream(ctx, src.Stream)
		if err != nil {
			return err
		}
		if err := st.DeleteMsg(ctx, src.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && !isNotFound(err) {
			return fmt.Errorf("delete dead-lettered %s seq %d: %w", src.Stream, src.Seq, err)
		}
	}
	d.log.Warn("message dead-lettered", "service", d.service, "code", code, "reason", reason,
		"subject", src.Subject, "stream", src.Stream, "seq", src.Seq, "deliveries", src.Deliveries)
	if d.counter != nil {
		d.counter.Add(ctx, 1, metric.WithAttributes(attribute.String("service", d.service), attribute.String("code", code)))
	}
	return nil
}

func isNotFound(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound
}

func (d *DeadLetterer) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st, ok := d.streams[name]; ok {
		return st, nil
	}
	st, err := d.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	d.streams[name] = st
	return st, nil
}

// Publish makes the DeadLetterer a watermill Publisher for the PoisonQueue middleware: it
// reads the origin from the subscriber's metadata and the reason from the poison metadata.
func (d *DeadLetterer) Publish(_ string, msgs ...*message.Message) error {
	for _, m := range msgs {
		seq, _ := strconv.ParseUint(m.Metadata.Get(MetaSeq), 10, 64)
		del, _ := strconv.ParseUint(m.Metadata.Get(MetaDelivered), 10, 64)
		src := SourceRef{Stream: m.Metadata.Get(MetaStream), Consumer: m.Metadata.Get(MetaConsumer),
			Subject: m.Metadata.Get(MetaSubject), Seq: seq, Deliveries: del}
		code := m.Metadata.Get(HeaderDLQCode)
		reason := m.Metadata.Get(middleware.ReasonForPoisonedKey)
		h := Header(m.Metadata)
		for _, k := range []string{middleware.ReasonForPoisonedKey, middleware.PoisonedTopicKey, middleware.PoisonedHandlerKey,
			middleware.PoisonedSubscriberKey, HeaderDLQCode} {
			delete(h, k)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := d.DeadLetter(ctx, src, h, m.Payload, code, reason)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// Close is part of message.Publisher; the DeadLetterer owns nothing to close.
func (d *DeadLetterer) Close() error { return nil }

// maxDeliveriesAdvisory is the part of the server's advisory we read.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// WatchMaxDeliveries dead-letters messages that reached MaxDeliver without a verdict — a
// handler that crashed or hung on its last delivery — which JetStream otherwise leaves in the
// stream forever. Replicas share the work through a queue group. It returns when ctx ends.
func (d *DeadLetterer) WatchMaxDeliveries(ctx context.Context, nc *nats.Conn, consumers []ConsumerSpec) error {
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for _, c := range consumers {
		subj := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + c.Stream + "." + c.Name
		sub, err := nc.QueueSubscribe(subj, "dlq-"+d.service, func(m *nats.Msg) { d.onAdvisory(ctx, m) })
		if err != nil {
			return fmt.Errorf("watch max deliveries of %s: %w", c.Name, err)
		}
		subs = append(subs, sub)
	}
	<-ctx.Done()
	return nil
}

func (d *DeadLetterer) onAdvisory(ctx context.Context, m *nats.Msg) {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(m.Data, &adv); err != nil {
		d.log.Error("unreadable max-deliveries advisory", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := d.stream(ctx, adv.Stream)
	if err != nil {
		d.log.Error("max-deliveries advisory", "stream", adv.Stream, "err", err)
		return
	}
	raw, err := st.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		if !errors.Is(err, jetstream.ErrMsgNotFound) && !isNotFound(err) {
			d.log.Error("max-deliveries advisory: get message", "stream", adv.Stream, "seq", adv.StreamSeq, "err", err)
		}
		return // already settled (acked or dead-lettered by the handler's last attempt)
	}
	src := SourceRef{Stream: adv.Stream, Consumer: adv.Consumer, Subject: raw.Subject, Seq: adv.StreamSeq, Deliveries: adv.Deliveries}
	reason := fmt.Sprintf("%s: delivered %d times without an ack (handler crashed, hung or timed out)", CodeMaxDeliveries, adv.Deliveries)
	if err := d.DeadLetter(ctx, src, raw.Header, raw.Data, CodeMaxDeliveries, reason); err != nil {
		d.log.Error("max-deliveries advisory: dead-letter", "err", err)
	}
}
