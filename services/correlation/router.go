package correlation

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
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

// A router batch is cut into parts of at most routeMaxEvents events and routeMaxBytes of
// EVENTS data, each routed and acknowledged on its own: a partition message stays well
// under the bus's maximum payload, and a storm's batch does not wait for all of it.
const (
	routeMaxEvents = 2000
	routeMaxBytes  = 256 << 10
)

// routePart is a part of a router batch being routed: its EVENTS messages, their
// sequences, and each partition's events.
type routePart struct {
	msgs   []jetstream.Msg
	seqs   []uint64
	parts  map[int][]routed
	events int
	bytes  int
}

// batch routes one batch, part by part: every event is published to its partition (or
// dead-lettered, or ignored by a rule, each counted) before its message is acknowledged.
func (r *router) batch(ctx context.Context, msgs []jetstream.Msg) {
	part := &routePart{parts: map[int][]routed{}}
	for i, m := range msgs {
		r.take(ctx, part, m)
		if part.events >= routeMaxEvents || part.bytes >= routeMaxBytes || i == len(msgs)-1 {
			if !r.route(ctx, part) {
				return // ctx ended: not acked, the events come back to a replica
			}
			part = &routePart{parts: map[int][]routed{}}
		}
	}
}

// take adds one EVENTS message's events to the part. A message that is neither an event
// batch nor an event is dead-lettered whole; an event of a batch that fails alone (a
// forged origin, an unknown severity) is dead-lettered alone and the others go on.
func (r *router) take(ctx context.Context, part *routePart, m jetstream.Msg) {
	part.msgs = append(part.msgs, m) // acknowledged with the part, whatever becomes of it
	seq, evs, err := r.s.decode(m)
	if err != nil {
		r.s.deadLetter(ctx, m, bus.StreamEvents, EventsConsumer, err)
		r.deadLettered.Add(1)
		return
	}
	if len(evs) == 0 {
		return // not an event (the gateway's audit records share EVENTS)
	}
	part.seqs = append(part.seqs, seq)
	part.bytes += len(m.Data())
	for i, ev := range evs {
		rt, ignored, err := r.key(m.Subject(), ev)
		switch {
		case err != nil && len(evs) == 1: // a message of one event: the message is the poison
			r.s.deadLetter(ctx, m, bus.StreamEvents, EventsConsumer, err)
			r.deadLettered.Add(1)
		case err != nil:
			r.s.deadLetterEvent(ctx, m, i, ev, fmt.Errorf("event %d of the %d in the message: %w", i, len(evs), err))
			r.deadLettered.Add(1)
		case ignored:
			r.ignored.Add(1)
		default:
			rt.EventSeq = seq
			p := partitionOf(r.s.rules.groupKey(func(k string) string { return eventField(ev, k) }), r.s.cfg.Partitions)
			part.parts[p] = append(part.parts[p], rt)
			part.events++
		}
	}
}

// key is the router's stages for one event: origin → normalize → event rules (ignore,
// transform) → dedup key. ignored: a rule dropped it (counted by rule).
func (r *router) key(subject string, ev *envelope.Event) (rt routed, ignored bool, err error) {
	if err := checkOrigin(subject, ev); err != nil {
		return routed{}, false, err
	}
	if err := normalize(ev); err != nil {
		return routed{}, false, err
	}
	rule, th := r.s.rules.apply(ev)
	if rule != "" {
		r.s.rules.count(rule)
		return routed{}, true, nil
	}
	if err := normalize(ev); err != nil { // a transform may have set anything
		return routed{}, false, bus.Permanent(fmt.Errorf("after the event rules: %w", err))
	}
	return routed{Key: dedupKey(ev), Event: ev, Threshold: th}, false, nil
}

// route publishes the part's partition messages, retrying failed ones in place until they
// are stored, then acknowledges the part's EVENTS messages. It reports false when ctx ended
// first (nothing acknowledged).
func (r *router) route(ctx context.Context, part *routePart) bool {
	if len(part.msgs) == 0 {
		return true
	}
	id := batchID(part.seqs)
	var pending []*nats.Msg
	events := map[*nats.Msg]int{}
	for p, evs := range part.parts {
		for i, chunk := range r.chunks(routedBatch{Events: evs}) {
			nm := &nats.Msg{Subject: partitionSubjectOf(p), Header: nats.Header{}, Data: chunk.data}
			// The same part routed again (a publish retried, a router restarted on the same
			// messages in the same parts) has the same id: the stream keeps one copy within
			// its duplicate window. Other copies are caught by the alerts (partition.go).
			nm.Header.Set(jetstream.MsgIDHeader, "r"+id+"."+strconv.Itoa(p)+"."+strconv.Itoa(i))
			pending = append(pending, nm)
			events[nm] = chunk.events
		}
	}
	backoff := 50 * time.Millisecond
	for len(pending) > 0 {
		if ctx.Err() != nil {
			return false
		}
		futures := make([]jetstream.PubAckFuture, 0, len(pending))
		var failed []*nats.Msg
		for _, nm := range pending {
			f, err := r.s.routeJS.PublishMsgAsync(nm)
			if err != nil {
				r.s.log.Debug("route events", "err", err)
				failed = append(failed, nm)
				continue
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
				r.routed.Add(int64(events[f.Msg()]))
			case err := <-f.Err():
				r.s.log.Debug("route events", "err", err)
				failed = append(failed, f.Msg())
			case <-ctx.Done():
				return false
			}
		}
		pending = failed
		if len(pending) > 0 {
			r.s.log.Warn("events not routed to their partitions; retrying", "messages", len(pending), "retry_in", backoff)
			for _, m := range part.msgs {
				_ = m.InProgress()
			}
			sleepReal(ctx, backoff)
			// Capped low: a publish fails while the server is busy, not for long, and each
			// second asleep holds the part's events (and, behind it, the router's batch).
			backoff = min(backoff*2, time.Second)
		}
	}
	for _, m := range part.msgs {
		_ = m.Ack()
	}
	return true
}

// routedChunk is one partition message's body and how many events it carries.
type routedChunk struct {
	data   []byte
	events int
}

// chunks marshals a partition's share of a part: one message or, past the connection's
// maximum payload, several, each holding whole keys — an alert's events of one EVENTS
// message must all be in one partition message (partition.go). One key's events too large for any
// message are dead-lettered, each with its reason, rather than retried forever.
func (r *router) chunks(b routedBatch) []routedChunk {
	limit := int(r.s.deps.NC.MaxPayload()) - 4096 // headers
	data, err := json.Marshal(b)
	if err == nil && len(data) <= limit {
		return []routedChunk{{data: data, events: len(b.Events)}}
	}
	byKey := map[string][]routed{}
	var keys []string
	for _, e := range b.Events {
		if _, ok := byKey[e.Key]; !ok {
			keys = append(keys, e.Key)
		}
		byKey[e.Key] = append(byKey[e.Key], e)
	}
	if len(keys) == 1 {
		r.tooLarge(b.Events, len(data), limit)
		return nil
	}
	var lo, hi []routed
	for i, k := range keys {
		if i < len(keys)/2 {
			lo = append(lo, byKey[k]...)
		} else {
			hi = append(hi, byKey[k]...)
		}
	}
	return append(r.chunks(routedBatch{Events: lo}), r.chunks(routedBatch{Events: hi})...)
}

// tooLarge dead-letters events whose routed form exceeds the bus's maximum payload.
func (r *router) tooLarge(evs []routed, size, limit int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, e := range evs {
		data, _ := json.Marshal(e.Event)
		src := bus.SourceRef{Stream: bus.StreamEvents, Consumer: EventsConsumer, Subject: bus.EventSubject(e.Event.Site, e.Event.Source),
			Seq: e.EventSeq, Part: "event " + e.Event.ID}
		reason := fmt.Sprintf("the events of dedup key %q in one routed batch take %d bytes, over the bus's maximum payload (%d): send smaller events", e.Key, size, limit)
		if err := r.s.dlq.DeadLetter(ctx, src, nil, data, bus.CodePermanent, reason); err != nil {
			r.s.log.Error("event too large for its partition and not dead-lettered", "event", e.Event.ID, "err", err)
		}
		r.deadLettered.Add(1)
	}
}

// batchID names a part by its EVENTS sequences (FNV-1a over them, and their count).
func batchID(seqs []uint64) string {
	h := fnv.New64a()
	var b [8]byte
	for _, s := range seqs {
		binary.LittleEndian.PutUint64(b[:], s)
		_, _ = h.Write(b[:])
	}
	return strconv.FormatUint(h.Sum64(), 36) + "-" + strconv.Itoa(len(seqs))
}

// decode is the origin stage's first half: the EVENTS sequence and the events of a message
// (none: not an event), or a permanent error.
func (s *service) decode(m jetstream.Msg) (uint64, []*envelope.Event, error) {
	md, err := m.Metadata()
	if err != nil {
		return 0, nil, bus.Permanent(fmt.Errorf("no stream metadata: %w", err))
	}
	h := m.Headers()
	_, body, err := envelope.DecodeWith(func(k string) string { return h.Get(k) }, m.Data())
	if err != nil {
		return 0, nil, err
	}
	switch b := body.(type) {
	case *envelope.Event:
		return md.Sequence.Stream, []*envelope.Event{b}, nil
	case *envelope.EventBatch:
		evs := make([]*envelope.Event, len(b.Events))
		for i := range b.Events {
			evs[i] = &b.Events[i]
		}
		return md.Sequence.Stream, evs, nil
	}
	return md.Sequence.Stream, nil, nil
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
	s.deadLetterRetrying(ctx, src, m.Headers(), m.Data(), code, cause)
}

// deadLetterEvent keeps the i-th event of a batch alone, as a message of one event (its
// own id and type in the headers), and leaves the batch in EVENTS: its other events are
// good and routed.
func (s *service) deadLetterEvent(ctx context.Context, m jetstream.Msg, i int, ev *envelope.Event, cause error) {
	src := bus.SourceRef{Stream: bus.StreamEvents, Consumer: EventsConsumer, Subject: m.Subject(), Part: "events[" + strconv.Itoa(i) + "]"}
	if md, err := m.Metadata(); err == nil {
		src.Seq, src.Deliveries = md.Sequence.Stream, md.NumDelivered
	}
	h := nats.Header{}
	for k, v := range m.Headers() {
		h[k] = v
	}
	h.Set(envelope.HeaderType, envelope.TypeEvent)
	h.Set(envelope.HeaderID, ev.ID)
	data, _ := json.Marshal(ev)
	s.deadLetterRetrying(ctx, src, h, data, bus.CodePermanent, cause)
}

func (s *service) deadLetterRetrying(ctx context.Context, src bus.SourceRef, h nats.Header, data []byte, code string, cause error) {
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.dlq.DeadLetter(dctx, src, h, data, code, cause.Error())
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
