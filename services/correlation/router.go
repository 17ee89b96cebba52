package correlation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// router is the first half of the pipeline, run by every replica on the shared EVENTS
// consumer: origin → normalize → event rules (ignore, transform) → dedup key → partition.
// It keeps no state, so any replica may route any event; the stateful stages (threshold,
// lifecycle, grouping, notification) run in the partition's owner.
type router struct {
	s *service
	// Counters, for tests and the status page: nothing dropped without one.
	routed, ignored, deadLettered atomic.Int64
}

// run routes events until ctx ends.
func (r *router) run(ctx context.Context) error {
	cons, err := r.s.deps.JS.Consumer(ctx, bus.StreamEvents, EventsConsumer)
	if err != nil {
		return fmt.Errorf("correlation: consumer %s (provisioned by the hub's topology): %w", EventsConsumer, err)
	}
	in, err := startIntake(cons, r.s.cfg.Batch, r.s.log.With("stage", "router"))
	if err != nil {
		return fmt.Errorf("correlation: events: %w", err)
	}
	defer in.stop()
	// Several batches in flight: a batch waits for its partition publishes to be stored
	// before it is acknowledged, and that round trip, not CPU, is what bounds one loop. Two
	// batches may then hand one key's events to its partition out of EVENTS order (as two
	// replicas may); each is still applied once.
	var wg sync.WaitGroup
	for range r.s.cfg.Routers {
		wg.Go(func() {
			for ctx.Err() == nil {
				if msgs := in.next(ctx, r.s.cfg.FlushInterval); len(msgs) > 0 {
					r.batch(ctx, msgs)
				}
			}
		})
	}
	wg.Wait()
	return nil
}

// batch routes one batch: every event is published to its partition (or dead-lettered, or
// ignored by a rule, each counted) before the batch is acknowledged. A failed publish is
// retried in place; its message id makes the retry harmless.
func (r *router) batch(ctx context.Context, msgs []jetstream.Msg) {
	var pending []*nats.Msg
	for _, m := range msgs {
		it, err := r.s.decode(m)
		if err != nil {
			r.s.deadLetter(ctx, m, bus.StreamEvents, EventsConsumer, err)
			r.deadLettered.Add(1)
			continue
		}
		if it.ev == nil {
			continue // not an event (the gateway's audit records share EVENTS)
		}
		rule, th := r.s.rules.apply(it.ev)
		if rule != "" {
			r.ignored.Add(1)
			r.s.rules.count(rule)
			continue
		}
		if err := normalize(it.ev); err != nil { // a transform may have set anything
			r.s.deadLetter(ctx, m, bus.StreamEvents, EventsConsumer, fmt.Errorf("after the event rules: %w", err))
			r.deadLettered.Add(1)
			continue
		}
		it.key = dedupKey(it.ev)
		pk := r.s.rules.groupKey(func(k string) string { return eventField(it.ev, k) })
		nm := &nats.Msg{Subject: partitionSubjectOf(partitionOf(pk, r.s.cfg.Partitions)), Header: nats.Header{},
			Data: routed{EventSeq: it.seq, Key: it.key, Event: it.ev, Threshold: th}.marshal()}
		nm.Header.Set(jetstream.MsgIDHeader, "e"+fmt.Sprint(it.seq))
		pending = append(pending, nm)
	}
	backoff := 50 * time.Millisecond
	for len(pending) > 0 && ctx.Err() == nil {
		futures := make([]jetstream.PubAckFuture, 0, len(pending))
		var failed []*nats.Msg
		for _, nm := range pending {
			f, err := r.s.routeJS.PublishMsgAsync(nm)
			if err != nil {
				r.s.log.Debug("route event", "err", err)
				failed = append(failed, nm)
				continue
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				r.s.log.Debug("route event", "err", err)
				failed = append(failed, f.Msg())
			case <-ctx.Done():
				return // not acked: the events come back to a replica
			}
		}
		r.routed.Add(int64(len(pending) - len(failed)))
		pending = failed
		if len(pending) > 0 {
			r.s.log.Warn("events not routed to their partitions; retrying", "events", len(pending), "retry_in", backoff)
			for _, m := range msgs {
				_ = m.InProgress()
			}
			sleepReal(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
		}
	}
	if ctx.Err() != nil {
		return
	}
	for _, m := range msgs {
		_ = m.Ack()
	}
}

// decode is the origin and normalize stages: an item, an item without event (not an
// event: skip), or a permanent error.
func (s *service) decode(m jetstream.Msg) (item, error) {
	md, err := m.Metadata()
	if err != nil {
		return item{}, bus.Permanent(fmt.Errorf("no stream metadata: %w", err))
	}
	h := m.Headers()
	_, body, err := envelope.DecodeWith(func(k string) string { return h.Get(k) }, m.Data())
	if err != nil {
		return item{}, err
	}
	ev, ok := body.(*envelope.Event)
	if !ok {
		return item{seq: md.Sequence.Stream}, nil
	}
	if err := checkOrigin(m.Subject(), ev); err != nil {
		return item{}, err
	}
	if err := normalize(ev); err != nil {
		return item{}, err
	}
	return item{seq: md.Sequence.Stream, ev: ev}, nil
}

func (s *service) deadLetter(ctx context.Context, m jetstream.Msg, stream, consumer string, cause error) {
	code := bus.CodePermanent
	if errors.Is(cause, envelope.ErrDecode) {
		code = bus.CodeDecode
	}
	src := bus.SourceRef{Stream: stream, Consumer: consumer, Subject: m.Subject()}
	if md, err := m.Metadata(); err == nil {
		src.Seq, src.Deliveries = md.Sequence.Stream, md.NumDelivered
	}
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.dlq.DeadLetter(dctx, src, m.Headers(), m.Data(), code, cause.Error())
		cancel()
		if err == nil {
			return
		}
		s.log.Warn("dead-letter failed; retrying", "err", err)
		sleepReal(ctx, time.Second)
	}
}

// sleepReal waits on the real clock: for retries against the bus, whose timeouts are real.
func sleepReal(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
