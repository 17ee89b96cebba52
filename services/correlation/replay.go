package correlation

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Replay (outpost replay --stream EVENTS --to correlation) reads the messages EVENTS kept
// with a fresh ordered consumer, runs the router's stateless stages on them with today's
// rules, and publishes them to their partitions as the router does, each event with its
// original EVENTS sequence and marked as a replay. The partition's owner applies them in
// line with live events (one writer per alert) and decides, per event, with what the key's
// alerts took (AppliedEvents, the applied ledger, ledger.go):
//
//   - taken already (live or by an earlier replay): skipped. Replaying a range twice, or a
//     range the live pipeline applied, changes no alert.
//   - never taken (a rule dropped it and was removed since, the alert bucket was wiped) and
//     not older than its key's open alert: the open alert's Count grows; its state,
//     severity, message and group stay, so nothing is notified again.
//   - never taken, and the key has no open alert (it closed, timed out, never opened) or
//     the event is older than the open one: the event goes into a replay record, a closed
//     alert (close_reason "replayed") with its count, times and latest fields. A replay
//     never opens, reopens or closes an alert from old events: old events are history, and
//     paging someone for them would be wrong; the record says what they would have been.
//     Records join no group (no notification, no remediation) and get no timeout.
//   - silences: an alert a replay writes is matched against the silences active now.
//
// Events below a key's AppliedFrom (keys an older version pruned) are taken as applied:
// a replay may miss re-evaluating them, never counts them twice. Events held by a
// threshold that never fired were not taken and come back as a replay record. The events
// the live router ignored or dead-lettered are counted (Ignored, Invalid) by today's rules.

// replayRead is how many EVENTS messages the replay reader fetches at once.
const replayRead = 500

// replay serves api.Replay.
func (s *service) replay(ctx context.Context, req api.ReplayRequest) (api.ReplayReply, error) {
	var errs []error
	if req.Stream != "" && !strings.EqualFold(req.Stream, bus.StreamEvents) {
		errs = append(errs, fmt.Errorf("stream %q: correlation replays %s", req.Stream, bus.StreamEvents))
	}
	now := s.clock.Now()
	since, err := replayTime("since", req.Since, now)
	if err != nil {
		errs = append(errs, err)
	}
	until, err := replayTime("until", req.Until, now)
	if err != nil {
		errs = append(errs, err)
	}
	if req.Since != "" && req.FromSeq > 0 {
		errs = append(errs, errors.New("since and from_seq: give one of them"))
	}
	if req.ToSeq > 0 && req.FromSeq > req.ToSeq {
		errs = append(errs, fmt.Errorf("from_seq %d is after to_seq %d", req.FromSeq, req.ToSeq))
	}
	if !since.IsZero() && !until.IsZero() && !until.After(since) {
		errs = append(errs, fmt.Errorf("until %s is not after since %s", req.Until, req.Since))
	}
	if req.Limit < 0 {
		errs = append(errs, fmt.Errorf("limit %d: want 1 to %d (0: %d)", req.Limit, api.ReplayLimit, api.ReplayLimit))
	}
	if len(errs) > 0 {
		return api.ReplayReply{}, bus.Errorf(http.StatusBadRequest, "%v", errors.Join(errs...))
	}
	limit := req.Limit
	if limit == 0 || limit > api.ReplayLimit {
		limit = api.ReplayLimit
	}
	floor := s.eventsAckFloor(ctx)
	out := api.ReplayReply{DryRun: req.DryRun}
	parts := map[int][]routed{}
	// what the alerts as read now took, per slot (the partitions decide again when applying)
	type slotView struct {
		a      *api.Alert
		ledger []api.SeqRange
		taken  []api.SeqRange // this request's own events applied, so one counts once
		open   bool
		record bool
	}
	views := map[string]*slotView{}
	var read []uint64
	err = s.readEvents(ctx, req.FromSeq, since, func(m jetstream.Msg, seq uint64, stored time.Time) (bool, error) {
		if (req.ToSeq > 0 && seq > req.ToSeq) || (!until.IsZero() && !stored.Before(until)) {
			return false, nil
		}
		if out.Messages == limit {
			out.Next = seq
			return false, nil
		}
		out.Messages++
		if out.FirstSeq == 0 {
			out.FirstSeq = seq
		}
		out.LastSeq = seq
		_, evs, err := s.decode(m)
		if err != nil {
			out.Invalid++
			return true, nil
		}
		read = append(read, seq)
		var touched []*slotView
		for _, ev := range evs {
			out.Events++
			rt, ignored, err := s.router.keyReplay(m.Subject(), ev)
			switch {
			case err != nil:
				out.Invalid++
				continue
			case ignored:
				out.Ignored++
				continue
			}
			slot := slotOf(rt.Key)
			v := views[slot]
			if v == nil {
				v = &slotView{}
				if v.a, _, err = s.store.get(ctx, slot); err != nil {
					return false, err
				}
				if v.ledger, err = s.ledger(ctx, slot); err != nil {
					return false, err
				}
				views[slot] = v
			}
			if takenBefore(v.a, v.ledger, seq, floor) || hasSeq(v.taken, seq) {
				out.Skipped++
				continue
			}
			out.Applied++
			if ev.Severity != api.SeverityClear || v.a != nil {
				if v.a != nil && v.a.State != api.StateClosed && v.a.FirstEvent > 0 && seq >= v.a.FirstEvent {
					v.open = true
				} else if ev.Severity != api.SeverityClear {
					v.record = true
				}
			}
			rt.EventSeq, rt.Replay = seq, true
			p := partitionOf(s.rules.groupKey(func(k string) string { return eventField(ev, k) }), s.cfg.Partitions)
			parts[p] = append(parts[p], rt)
			touched = append(touched, v)
		}
		// the events of one message are taken together by the partition: a later message
		// of the same sequence (none) or a second request sees them as taken
		for _, v := range touched {
			v.taken = addSeq(v.taken, seq)
		}
		return true, nil
	})
	if err != nil {
		return out, bus.Errorf(http.StatusServiceUnavailable, "replay %s after %d messages: %v; replay again: nothing is counted twice", bus.StreamEvents, out.Messages, err)
	}
	for _, v := range views {
		if v.open {
			out.AlertsOpen++
		}
		if v.record {
			out.Records++
		}
		if v.open || v.record {
			out.Alerts++
		}
	}
	if req.DryRun || len(parts) == 0 {
		return out, nil
	}
	if err := s.publishReplay(ctx, read, parts); err != nil {
		return out, bus.Errorf(http.StatusServiceUnavailable, "replay %s seq %d-%d: %v; replay the range again: nothing is counted twice", bus.StreamEvents, out.FirstSeq, out.LastSeq, err)
	}
	return out, nil
}

// publishReplay publishes each partition's replayed events, chunked as the router does,
// under ids of the replayed sequences and the chunk's content: the same request retried is
// one copy, while a replay of the same range after a rule changed (other events, other
// keys) is not taken for it by the partition stream's duplicate window.
func (s *service) publishReplay(ctx context.Context, seqs []uint64, parts map[int][]routed) error {
	id := batchID(seqs)
	for p, evs := range parts {
		for i, chunk := range s.router.chunks(routedBatch{Events: evs}) {
			h := fnv.New64a()
			_, _ = h.Write(chunk.data)
			nm := &nats.Msg{Subject: partitionSubjectOf(p), Header: nats.Header{}, Data: chunk.data}
			nm.Header.Set(jetstream.MsgIDHeader, "replay"+id+"."+strconv.Itoa(p)+"."+strconv.Itoa(i)+"."+strconv.FormatUint(h.Sum64(), 36))
			if _, err := s.deps.JS.PublishMsg(ctx, nm); err != nil {
				return fmt.Errorf("partition %d: %w", p, err)
			}
		}
	}
	return nil
}

// readEvents reads EVENTS (from fromSeq or since, else from the start) until it has caught up
// or f says stop.
func (s *service) readEvents(ctx context.Context, fromSeq uint64, since time.Time, f func(m jetstream.Msg, seq uint64, stored time.Time) (bool, error)) error {
	return bus.ReadRange(ctx, s.deps.JS, bus.StreamRange{Stream: bus.StreamEvents, Filter: "event.>", FromSeq: fromSeq, Since: since, Batch: replayRead}, f)
}

// eventsAckFloor is the events consumer's acknowledgement floor now (0 when unknown: then
// only AppliedFrom and the ranges decide).
func (s *service) eventsAckFloor(ctx context.Context) uint64 {
	cons, err := s.deps.JS.Consumer(ctx, bus.StreamEvents, EventsConsumer)
	if err != nil {
		return 0
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0
	}
	return info.AckFloor.Stream
}

// replayTime reads since/until: a duration before now (10m) or an RFC 3339 time.
func replayTime(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want a duration before now such as 10m, or an RFC 3339 time", name, v)
}

// keyReplay is the router's stages for a replayed event: as live, but an ignore is counted
// by the replay's reply, not by the rule's live counter.
func (r *router) keyReplay(subject string, ev *envelope.Event) (routed, bool, error) {
	if err := checkOrigin(subject, ev); err != nil {
		return routed{}, false, err
	}
	if err := normalize(ev); err != nil {
		return routed{}, false, err
	}
	if rule, th := r.s.rules.apply(ev); rule != "" {
		return routed{}, true, nil
	} else if err := normalize(ev); err != nil {
		return routed{}, false, err
	} else {
		return routed{Key: dedupKey(ev), Event: ev, Threshold: th}, false, nil
	}
}

// takenBefore reports whether the key whose current alert (as read) is a took the EVENTS
// sequence eseq already: in the alert's ranges, in the slot's ledger, or below what the
// key's sequences are known from (an older version's alert: the events consumer's floor).
func takenBefore(a *api.Alert, ledger []api.SeqRange, eseq, floor uint64) bool {
	if hasSeq(ledger, eseq) {
		return true
	}
	if a == nil {
		return false
	}
	if hasSeq(a.AppliedEvents, eseq) {
		return true
	}
	from := a.AppliedFrom
	if from == 0 {
		from = floor + 1
	}
	return eseq < from
}

// foldReplay applies a replayed event its key never took (module comment above): into the
// open alert cur when the event is not older than it, else into a closed replay record —
// the current one (cur itself when cur is a record, or a new record replacing a closed cur,
// which is archived) or side, a record of events older than the open cur, archived by the
// caller. The event's sequence is recorded in the current alert either way.
func foldReplay(cur, side *api.Alert, archived []*api.Alert, slot string, it item, now time.Time) (*api.Alert, *api.Alert, []*api.Alert) {
	problem := it.ev.Severity != api.SeverityClear
	if cur != nil && cur.State != api.StateClosed {
		a := *cur
		a.AppliedEvents = addSeq(slices.Clone(cur.AppliedEvents), it.eseq)
		a.LastSeq = max(a.LastSeq, it.seq)
		if cur.FirstEvent > 0 && it.eseq >= cur.FirstEvent {
			if problem {
				a.Count++
			}
			return &a, side, archived
		}
		if problem {
			side = extendRecord(side, slot, it, now)
		}
		return &a, side, archived
	}
	if !problem { // nothing open to clear: remembered as taken, nothing else
		if cur == nil {
			return nil, side, archived
		}
		a := *cur
		a.AppliedEvents = addSeq(slices.Clone(cur.AppliedEvents), it.eseq)
		a.LastSeq = max(a.LastSeq, it.seq)
		return &a, side, archived
	}
	if cur != nil && cur.CloseReason == api.ClosedByReplay {
		a := extendRecord(cur, slot, it, now)
		a.AppliedEvents = addSeq(slices.Clone(cur.AppliedEvents), it.eseq)
		return a, side, archived
	}
	a := extendRecord(nil, slot, it, now)
	if cur != nil {
		a.AppliedEvents, a.AppliedFrom = slices.Clone(cur.AppliedEvents), cur.AppliedFrom
		archived = append(archived, cur)
	}
	a.AppliedEvents = addSeq(a.AppliedEvents, it.eseq)
	return a, side, archived
}

// extendRecord adds a problem event to a replay record (nil: a new one, its id the event's
// place in the partition stream like any alert's). Times are the events' own.
func extendRecord(rec *api.Alert, slot string, it item, now time.Time) *api.Alert {
	ev := it.ev
	at := ev.Time
	if at.IsZero() {
		at = now
	}
	if rec == nil {
		t := now
		return &api.Alert{ID: alertID(slot, it.seq, it.idx), Key: it.key, State: api.StateClosed, Severity: ev.Severity,
			Site: ev.Site, Source: ev.Source, Node: ev.Node, Type: ev.Type, Resource: ev.Resource, Metric: ev.Metric,
			MessageKey: ev.MessageKey, Message: ev.Message, Additional: ev.Fields, Count: 1, FirstSeen: at, LastSeen: at,
			ClosedAt: &t, CloseReason: api.ClosedByReplay, LastSeq: it.seq, LastEvent: it.eseq, FirstEvent: it.eseq, AppliedFrom: 1}
	}
	a := *rec
	a.Count++
	a.LastSeq = max(a.LastSeq, it.seq)
	if at.Before(a.FirstSeen) {
		a.FirstSeen = at
	}
	if at.After(a.LastSeen) {
		a.LastSeen = at
	}
	if it.eseq < a.FirstEvent {
		a.FirstEvent = it.eseq
	}
	if it.eseq >= a.LastEvent {
		a.LastEvent, a.Severity = it.eseq, ev.Severity
		if ev.Message != "" {
			a.Message = ev.Message
		}
		if len(ev.Fields) > 0 {
			a.Additional = ev.Fields
		}
	}
	return &a
}
