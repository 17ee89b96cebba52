package correlation

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
)

// processor is the active replica's event loop: fetch a batch, run it through the stages,
// write each touched alert once, ack the batch; between batches, close timed-out alerts.
// Everything here runs on one goroutine except the writers of a flush, which each own a
// distinct set of slots.
type processor struct {
	s     *service
	part  int
	cache map[string]*cached // slot → alert as last written or read
	// Timeouts: one heap of (deadline, slot), no goroutine or timer per alert; a slot is in
	// it at most once (scheduled) and is re-checked against the alert when it comes due.
	timers    timerHeap
	scheduled map[string]bool
	// groups are the partition's aggregation groups (grouping.go); slots the per-slot state
	// of the threshold and flapping stages. Both are memory only: a new owner rebuilds the
	// groups from the open alerts, and starts thresholds and flap counts afresh.
	groups map[string]*group
	slots  map[string]slotState
	// eventsFloor is the events consumer's acknowledgement floor as read at least
	// floorSettle ago: alerts keep the EVENTS sequences they applied above it. A fresh read
	// (nextFloor, at nextFloorAt) waits that long, because the server stores a consumer's
	// acknowledgements a little after it reports them: one killed meanwhile gives those
	// events to the router again.
	eventsFloor, nextFloor uint64
	floorRead, nextFloorAt time.Time
}

// floorSettle is how old a read of the events consumer's acknowledgement floor must be
// before it is trusted: well above the server's consumer state flush (100 ms) and its
// sync interval (1 s).
const floorSettle = 5 * time.Second

// slotState is what the threshold and flapping stages remember of a slot between batches.
type slotState struct {
	held    []time.Time // threshold: events held back, by arrival
	changes []time.Time // flapping: state changes
}

type cached struct {
	a   *api.Alert // nil: no alert in the slot
	rev uint64
}

func newProcessor(s *service, part int) *processor {
	return &processor{s: s, part: part, cache: map[string]*cached{}, scheduled: map[string]bool{},
		groups: map[string]*group{}, slots: map[string]slotState{}}
}

// run processes events until ctx ends (lease lost or shutdown). Events of a batch that is
// not fully written are not acked: the next active replica gets them again.
func (p *processor) run(ctx context.Context) error {
	cons, err := p.s.deps.JS.Consumer(ctx, StreamPartitions, partitionConsumer(p.part))
	if err != nil {
		return fmt.Errorf("correlation: consumer %s: %w", partitionConsumer(p.part), err)
	}
	if err := p.loadOpen(ctx); err != nil {
		return err
	}
	if err := p.catchUp(ctx, cons); err != nil {
		return err
	}
	in, err := startIntake(cons, p.s.cfg.Batch, p.s.log.With("partition", p.part))
	if err != nil {
		return fmt.Errorf("correlation: partition %d: %w", p.part, err)
	}
	defer in.stop()
	for ctx.Err() == nil {
		// FlushInterval (real time) bounds how long timers wait when no event comes.
		if msgs := in.next(ctx, p.s.cfg.FlushInterval); len(msgs) > 0 {
			if err := p.handle(ctx, msgs, true); err != nil {
				return nil // ctx ended with the batch unwritten: not acked, it comes back
			}
		}
		p.fireTimers(ctx)
	}
	return nil
}

// catchUp applies, in stream order, the events a previous active replica had been given but
// not acknowledged, before this one takes new events: otherwise their redelivery would come
// after newer events of the same alerts, and be skipped as already applied. Events it had
// applied are skipped by each alert's LastSeq.
func (p *processor) catchUp(ctx context.Context, cons jetstream.Consumer) error {
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("correlation: consumer info: %w", err)
	}
	from, to := info.AckFloor.Stream+1, info.Delivered.Stream
	if info.NumAckPending == 0 || to < from {
		return nil
	}
	p.s.log.Info("catching up on events another replica had not acknowledged", "from_seq", from, "to_seq", to)
	oc, err := p.s.deps.JS.OrderedConsumer(ctx, StreamPartitions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{partitionSubjectOf(p.part)}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
	if err != nil {
		return fmt.Errorf("correlation: catch-up reader: %w", err)
	}
	for ctx.Err() == nil {
		batch, err := oc.Fetch(p.s.cfg.Batch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("correlation: catch-up read: %w", err)
		}
		var msgs []jetstream.Msg
		done := false
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil || md.Sequence.Stream > to {
				done = true
				continue
			}
			msgs = append(msgs, m)
			if md.Sequence.Stream == to {
				done = true
			}
		}
		if len(msgs) > 0 {
			if err := p.handle(ctx, msgs, false); err != nil {
				return nil
			}
		}
		if done || len(msgs) == 0 {
			return nil
		}
	}
	return nil
}

// handle runs one batch through the pipeline. With ack, poison events are dead-lettered
// and the batch is acked once written; it retries failed writes in place (never skipping
// ahead) and returns an error only when ctx ends first.
func (p *processor) handle(ctx context.Context, msgs []jetstream.Msg, ack bool) error {
	now := p.s.clock.Now().UTC()
	p.readEventsFloor(ctx)
	groups := map[string][]item{}
	var order []string
	events := 0
	for _, m := range msgs {
		its, err := p.decode(m)
		if err != nil {
			if ack {
				p.s.deadLetter(ctx, m, StreamPartitions, partitionConsumer(p.part), err)
			}
			continue
		}
		events += len(its)
		for _, it := range its {
			slot := slotOf(it.key)
			if _, ok := groups[slot]; !ok {
				order = append(order, slot)
			}
			groups[slot] = append(groups[slot], it)
		}
	}
	pending := order
	backoff := 100 * time.Millisecond
	for len(pending) > 0 {
		pending = p.flush(ctx, pending, groups, now)
		if len(pending) == 0 {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ack {
			for _, m := range msgs {
				_ = m.InProgress()
			}
		}
		p.s.log.Warn("alerts not written; retrying before taking newer events", "alerts", len(pending), "retry_in", backoff)
		sleep(ctx, p.s, backoff)
		backoff = min(backoff*2, 5*time.Second)
	}
	if ack {
		for _, m := range msgs {
			_ = m.Ack()
		}
		p.s.applied.Add(int64(events))
	}
	if len(p.cache) > p.s.cfg.MaxCachedAlerts {
		p.cache = map[string]*cached{}
	}
	return nil
}

// decode reads a routed batch; a message that is not one is a bug of a router, kept in
// the DLQ with its reason.
func (p *processor) decode(m jetstream.Msg) ([]item, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, bus.Permanent(fmt.Errorf("no stream metadata: %w", err))
	}
	b, err := partitionMsg(m.Data())
	if err != nil {
		return nil, bus.Permanent(fmt.Errorf("partition %d message %d is not a routed batch: %v", p.part, md.Sequence.Stream, err))
	}
	its := make([]item, len(b.Events))
	for i, r := range b.Events {
		its[i] = item{seq: md.Sequence.Stream, eseq: r.EventSeq, ev: r.Event, key: r.Key, th: r.Threshold, idx: i, replay: r.Replay}
	}
	return its, nil
}

// readEventsFloor refreshes eventsFloor, reading the bus at most once a second (real time).
// The floor only grows, and a stale one only keeps more sequences: on an error the last one
// stays.
func (p *processor) readEventsFloor(ctx context.Context) {
	if time.Since(p.floorRead) < time.Second {
		return
	}
	p.floorRead = time.Now()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cons, err := p.s.deps.JS.Consumer(cctx, bus.StreamEvents, EventsConsumer)
	if err == nil {
		var info *jetstream.ConsumerInfo
		if info, err = cons.Info(cctx); err == nil {
			now := time.Now()
			if !p.nextFloorAt.IsZero() && now.Sub(p.nextFloorAt) < floorSettle {
				return // the pending read is not old enough yet
			}
			if !p.nextFloorAt.IsZero() {
				p.eventsFloor = max(p.eventsFloor, p.nextFloor)
			}
			p.nextFloor, p.nextFloorAt = info.AckFloor.Stream, now
			return
		}
	}
	p.s.log.Debug("events consumer's ack floor", "err", err)
}

// flush writes the alerts of the given slots with up to Writers at once and returns the
// slots that could not be written.
func (p *processor) flush(ctx context.Context, slots []string, groups map[string][]item, now time.Time) []string {
	type result struct {
		slot string
		c    *cached
		st   slotState
		err  error
	}
	results := make([]result, len(slots))
	sem := make(chan struct{}, p.s.cfg.Writers)
	var wg sync.WaitGroup
	for i, slot := range slots {
		results[i].slot = slot
		c := p.cache[slot]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i].c, results[i].st, results[i].err = p.apply(ctx, slot, c, groups[slot], now, p.slots[slot])
		}()
	}
	wg.Wait()
	var failed []string
	for _, r := range results {
		if r.err != nil {
			delete(p.cache, r.slot)
			failed = append(failed, r.slot)
			p.s.log.Debug("write alert", "slot", r.slot, "err", r.err)
			continue
		}
		if old := p.cache[r.slot]; pending(r.c.a) && (old == nil || old.a == nil || old.a.ID != r.c.a.ID) {
			p.s.rem.enqueue(ctx, r.slot)
		}
		p.cache[r.slot] = r.c
		if p.s.onWrite != nil && r.c.a != nil {
			p.s.onWrite(r.c.a)
		}
		if len(r.st.held) == 0 && len(r.st.changes) == 0 {
			delete(p.slots, r.slot)
		} else {
			p.slots[r.slot] = r.st
		}
		p.schedule(r.slot, r.c.a)
		p.track(r.slot, r.c.a, now)
	}
	return failed
}

// apply folds a slot's events into its alert and writes it once (compare-and-set on the
// revision: an API ack or close in between makes it re-read and fold again; events already
// in the alert are skipped by LastSeq). On its way it applies the threshold stage (events
// of a key with no open alert are held until Count of them came within Within) and the
// flapping stage (state changes counted per slot). It runs concurrently with the other
// slots' applies and so touches no processor state: st in, st out.
func (p *processor) apply(ctx context.Context, slot string, c *cached, items []item, now time.Time, st0 slotState) (*cached, slotState, error) {
	for attempt := 0; attempt < 10; attempt++ {
		st := slotState{held: slices.Clone(st0.held), changes: slices.Clone(st0.changes)}
		if c == nil {
			a, rev, err := p.s.store.get(ctx, slot)
			if err != nil {
				return nil, st0, err
			}
			c = &cached{a: a, rev: rev}
		}
		cur, changed := c.a, false
		var archived []*api.Alert
		// Skip what the alert took already: a partition message at or below its LastSeq (a
		// redelivery), an event of an EVENTS message it has taken (the alert as read, or an
		// earlier partition message of these items: routed again in another batch). A
		// message's own events are not skipped: several of one EVENTS message share its
		// sequence.
		var lastSeq uint64
		var seen []api.SeqRange
		if c.a != nil {
			lastSeq, seen = c.a.LastSeq, c.a.AppliedEvents
		}
		var msgSeq uint64
		var msgEvents []uint64 // EVENTS sequences of the current partition message's items
		// A replay's items: the slot's applied ledger (read once, only for them) and the
		// closed replay record of events older than the open alert (archived with it).
		var ledger []api.SeqRange
		var ledgerRead bool
		var side *api.Alert
		var err error
		for _, it := range items {
			if it.seq != msgSeq {
				if len(msgEvents) > 0 {
					seen = slices.Clone(seen)
					for _, e := range msgEvents {
						seen = addSeq(seen, e)
					}
				}
				msgSeq, msgEvents = it.seq, msgEvents[:0]
			}
			if it.seq <= lastSeq || hasSeq(seen, it.eseq) {
				continue
			}
			if it.replay {
				if !ledgerRead {
					if ledger, err = p.s.ledger(ctx, slot); err != nil {
						return nil, st0, err
					}
					ledgerRead = true
				}
				if takenBefore(c.a, ledger, it.eseq, p.eventsFloor) {
					continue
				}
				msgEvents = append(msgEvents, it.eseq)
				var rec *api.Alert
				cur, rec, archived = foldReplay(cur, side, archived, slot, it, now)
				if rec != nil {
					side = rec
				}
				changed = true
				continue
			}
			msgEvents = append(msgEvents, it.eseq)
			closed := cur == nil || cur.State == api.StateClosed
			held := 0
			if it.th != nil && closed && it.ev.Severity != api.SeverityClear {
				st.held = append(within(st.held, now, it.th.Within), now)
				if len(st.held) < it.th.Count {
					continue
				}
				held, st.held = len(st.held), nil
			}
			next, old, ch := fold(cur, it, now)
			if ch && old != nil {
				archived = append(archived, old)
			}
			if ch && next != nil && closed != (next.State == api.StateClosed) {
				st.changes = append(st.changes, now)
			}
			if held > 0 && next != nil {
				next.Count = int64(held)
			}
			changed = changed || ch
			cur = next
		}
		if f := p.s.rules.flapping; f != nil {
			st.changes = within(st.changes, now, f.Interval)
			if cur != nil {
				flapping := len(st.changes) >= f.Changes
				if cur.Flapping != flapping {
					n := *cur
					n.Flapping, cur, changed = flapping, &n, true
				}
			}
		}
		if !changed {
			return c, st, nil
		}
		if cur == nil { // a replay's clears with nothing to clear and nothing to record
			return c, st, nil
		}
		opened := cur.State != api.StateClosed && (c.a == nil || c.a.ID != cur.ID)
		record := cur.CloseReason == api.ClosedByReplay && (c.a == nil || c.a.ID != cur.ID)
		if cur.CI == "" && (opened || record) {
			cur.CI, cur.CIClass = p.s.cis.bind(ctx, cur.Node)
		}
		if side != nil {
			side.CI, side.CIClass = p.s.cis.bind(ctx, side.Node)
			side.Group = p.s.rules.groupKey(side.Field)
			archived = append(archived, side)
		}
		switch {
		// First written by this version: a new key knows all it took; an older version's
		// alert kept its sequences above the floor only (not read yet: left for a later
		// write, and a replay meanwhile takes the floor it reads as the bound).
		case cur.AppliedFrom > 0:
		case c.a == nil:
			cur.AppliedFrom = 1
		case p.eventsFloor > 0:
			cur.AppliedFrom = p.eventsFloor + 1
		}
		if opened && len(cur.Remediations) == 0 {
			p.s.rem.request(cur) // written with the alert: a pending remediation survives a crash
		}
		cur.Group = p.s.rules.groupKey(cur.Field)
		keep, spill := trimApplied(cur.AppliedEvents, p.eventsFloor)
		if len(spill) > 0 {
			if err := p.s.spill(ctx, slot, spill); err != nil {
				return nil, st0, err
			}
			cur.AppliedEvents = keep
		}
		silence(cur, p.s.activeSilences(), now)
		for _, old := range archived {
			if err := p.s.store.archive(ctx, old); err != nil {
				return nil, st0, err
			}
		}
		rev, err := p.s.store.put(ctx, slot, cur, c.rev)
		if errors.Is(err, errConflict) {
			c = nil
			continue
		}
		if err != nil {
			return nil, st0, err
		}
		return &cached{a: cur, rev: rev}, st, nil
	}
	return nil, st0, fmt.Errorf("alert slot %s: changed under every one of 10 writes", slot)
}

// within keeps the times after now-d.
func within(ts []time.Time, now time.Time, d time.Duration) []time.Time {
	cut := 0
	for cut < len(ts) && !ts[cut].After(now.Add(-d)) {
		cut++
	}
	return ts[cut:]
}

// loadOpen schedules the timeouts of the alerts that are open in KV when this replica
// becomes active.
func (p *processor) loadOpen(ctx context.Context) error {
	all, err := p.s.store.all(ctx)
	if err != nil {
		return fmt.Errorf("correlation: load open alerts: %w", err)
	}
	for i := range all {
		a := &all[i]
		if a.State != api.StateClosed && p.owns(a) {
			if slot, ok := slotOfID(a.ID); ok {
				if pending(a) { // its previous owner died before starting it
					p.s.rem.enqueue(ctx, slot)
				}
				p.schedule(slot, a)
				p.track(slot, a, p.s.clock.Now().UTC())
			}
		}
	}
	return nil
}

// owns: the alert's group is in this processor's partition.
func (p *processor) owns(a *api.Alert) bool {
	return partitionOf(p.s.rules.groupKey(a.Field), p.s.cfg.Partitions) == p.part
}

func (p *processor) schedule(slot string, a *api.Alert) {
	if p.s.cfg.AlertTimeout <= 0 || a == nil || a.State == api.StateClosed || p.scheduled[slot] {
		return
	}
	p.scheduled[slot] = true
	heap.Push(&p.timers, timer{due: a.LastSeen.Add(p.s.cfg.AlertTimeout), slot: slot})
}

// fireTimers runs the timers that are due: group ticks (grouping.go) and alert timeouts
// (an alert touched since it was scheduled goes back in the heap at its new deadline).
func (p *processor) fireTimers(ctx context.Context) {
	now := p.s.clock.Now().UTC()
	for p.timers.Len() > 0 && !p.timers[0].due.After(now) {
		t := heap.Pop(&p.timers).(timer)
		if t.group != "" {
			p.tickGroup(ctx, t.group, now)
			continue
		}
		delete(p.scheduled, t.slot)
		c, err := p.closeIfTimedOut(ctx, t.slot, now)
		if err != nil {
			p.s.log.Warn("alert timeout: cannot write; will retry", "slot", t.slot, "err", err)
			p.scheduled[t.slot] = true
			heap.Push(&p.timers, timer{due: now.Add(time.Second), slot: t.slot})
			return
		}
		p.cache[t.slot] = c
		p.schedule(t.slot, c.a)
		p.track(t.slot, c.a, now)
	}
}

func (p *processor) closeIfTimedOut(ctx context.Context, slot string, now time.Time) (*cached, error) {
	c := p.cache[slot]
	for attempt := 0; attempt < 10; attempt++ {
		if c == nil {
			a, rev, err := p.s.store.get(ctx, slot)
			if err != nil {
				return nil, err
			}
			c = &cached{a: a, rev: rev}
		}
		next, closed := timeout(c.a, p.s.cfg.AlertTimeout, now)
		if !closed {
			return c, nil
		}
		rev, err := p.s.store.put(ctx, slot, next, c.rev)
		if errors.Is(err, errConflict) {
			c = nil
			continue
		}
		if err != nil {
			return nil, err
		}
		return &cached{a: next, rev: rev}, nil
	}
	return nil, fmt.Errorf("alert slot %s: changed under every one of 10 writes", slot)
}

// timer is an alert's timeout (slot) or a group's tick (group).
type timer struct {
	due   time.Time
	slot  string
	group string
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

func sleep(ctx context.Context, s *service, d time.Duration) {
	t := s.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
	case <-ctx.Done():
	}
}
