package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// The triggers consumer's filter follows the classes cmdb_change triggers watch: the server
// delivers only their change events. Every CI an import or a discovery creates or updates is
// a change event; delivered to this consumer and acknowledged, each cost the hub's NATS
// server and this service about 5 µs of CPU for nothing when no trigger watches its class
// (an import of 100,000 rows: 100,000 deliveries and acks).
//
// The consumer starts each term as serve provisions it (every class, cmdb.changed.>), and is
// narrowed once the definitions are known. A narrowed consumer moves past the events of the
// classes it leaves out, so a class taken in later — a trigger added for it — may have
// events the consumer went past: they are read again from CHANGES (as `outpost replay`
// does: same matching, same run ids, so a run started already is found and left), from a
// little before the trigger's definition was added (changes before that never fire it).
// What must be read again is written to the leases bucket before the filter takes the class
// in and deleted once read, so a crash in between reads it at the next term.

// changeFilterNone is the filter while no trigger watches a class: a subject of CHANGES no
// change event has (trigger classes are lower-case names, never "_none").
const changeFilterNone = "cmdb.changed._none"

// triggerReplayKey (leases bucket) holds the triggerReplay still to read.
const triggerReplayKey = "orchestration.trigger-replay"

// replayMargin is read before a definition's time: a change stored a little before its
// observation time (a producer's clock ahead of the hub's) is still read.
const replayMargin = 5 * time.Minute

// triggerReplay is what is to be read again from CHANGES: these classes' events since Since.
type triggerReplay struct {
	Classes []string  `json:"classes"`
	Since   time.Time `json:"since"`
}

// merge adds classes to read from since (the earlier time of both stays).
func (r *triggerReplay) merge(classes []string, since time.Time) *triggerReplay {
	out := &triggerReplay{Since: since}
	if r != nil {
		out.Classes = append(out.Classes, r.Classes...)
		if r.Since.Before(since) {
			out.Since = r.Since
		}
	}
	for _, c := range classes {
		if !slices.Contains(out.Classes, c) {
			out.Classes = append(out.Classes, c)
		}
	}
	sort.Strings(out.Classes)
	return out
}

// watchedClasses maps each class a cmdb_change trigger of the latest definitions watches to
// the earliest time such a definition was added.
func (s *service) watchedClasses(ctx context.Context) map[string]time.Time {
	out := map[string]time.Time{}
	for _, t := range s.triggeredDefs(ctx) {
		if m := t.d.Workflow.On.CMDBChange; m != nil && m.Class != "" {
			if at, ok := out[m.Class]; !ok || t.d.Added.Before(at) {
				out[m.Class] = t.d.Added
			}
		}
	}
	return out
}

// changeFilters are the triggers consumer's filter subjects for classes.
func changeFilters(classes map[string]time.Time) []string {
	if len(classes) == 0 {
		return []string{changeFilterNone}
	}
	out := make([]string, 0, len(classes))
	for c := range classes {
		out = append(out, bus.ChangeSubject(c))
	}
	sort.Strings(out)
	return out
}

// followChangeClasses keeps the triggers consumer's filter on the watched classes until ctx
// ends (this term); the runs a read-again starts belong to runCtx.
func (s *service) followChangeClasses(ctx, runCtx context.Context, wg *sync.WaitGroup) {
	var applied map[string]time.Time // nil: every class, as serve provisioned the consumer
	pending, err := s.loadTriggerReplay(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("cmdb_change triggers: the change events left to read again are unknown; the consumer keeps every class", "err", err)
		return
	}
	retry := time.Second
	recheck := time.NewTicker(filterRecheck) // real time: a bus-side check
	defer recheck.Stop()
	for {
		again := false
		if s.defs.isReady() {
			if err := s.applyChangeClasses(ctx, runCtx, wg, &applied, &pending); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("cmdb_change triggers: consumer filter or read-again not done; retried", "err", err, "in", retry)
				again = true
			}
		}
		var after <-chan time.Time
		if again {
			after = time.After(retry) // real time, as the bus's own retries
			retry = min(2*retry, time.Minute)
		} else {
			retry = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-s.defs.classesChanged:
		case <-after:
		case <-recheck.C:
			if s.reprovisioned(ctx) {
				applied = nil // every class again: narrowed next round, nothing skipped meanwhile
			}
		}
	}
}

// filterRecheck is how often the consumer's filter is compared with the bus: another hub
// process starting provisions the consumer as Consumers has it (every class) again.
var filterRecheck = time.Minute

// reprovisioned tells whether the triggers consumer has the filter Consumers gives it (every
// class), as a process provisioning the bus sets it.
func (s *service) reprovisioned(ctx context.Context) bool {
	c, err := s.deps.JS.Consumer(ctx, bus.StreamChanges, TriggersConsumer)
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	if err != nil {
		return false
	}
	return slices.Equal(consumerFilters(info.Config), triggersConsumerSpec().Filters)
}

// consumerFilters is a consumer's filter subjects, however the config holds them.
func consumerFilters(c jetstream.ConsumerConfig) []string {
	if c.FilterSubject != "" {
		return []string{c.FilterSubject}
	}
	return c.FilterSubjects
}

// applyChangeClasses is one round of followChangeClasses: note what a new class needs read
// again, set the filter, read it.
func (s *service) applyChangeClasses(ctx, runCtx context.Context, wg *sync.WaitGroup, applied *map[string]time.Time, pending **triggerReplay) error {
	classes := s.watchedClasses(ctx)
	if *applied != nil {
		var added []string
		var since time.Time
		for c, at := range classes {
			if _, ok := (*applied)[c]; !ok {
				added = append(added, c)
				if since.IsZero() || at.Before(since) {
					since = at
				}
			}
		}
		if len(added) > 0 {
			next := (*pending).merge(added, since.Add(-replayMargin))
			if err := s.saveTriggerReplay(ctx, next); err != nil {
				return err // the filter takes nothing in before it is written
			}
			*pending = next
		}
	}
	if *applied == nil || !sameClasses(*applied, classes) {
		spec := triggersConsumerSpec()
		spec.Filters = changeFilters(classes)
		if s.beforeFilter != nil {
			s.beforeFilter(ctx, spec.Filters)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if _, err := s.deps.JS.CreateOrUpdateConsumer(ctx, spec.Stream, spec.Config()); err != nil {
			return fmt.Errorf("consumer %s filter %v: %w", spec.Name, spec.Filters, err)
		}
		*applied = classes
	}
	if *pending == nil {
		return nil
	}
	if err := s.readChangesAgain(ctx, runCtx, wg, **pending); err != nil {
		return err
	}
	if err := s.kvLeases.Delete(ctx, triggerReplayKey); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete %s: %w", triggerReplayKey, err)
	}
	*pending = nil
	return nil
}

func sameClasses(a, b map[string]time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for c := range a {
		if _, ok := b[c]; !ok {
			return false
		}
	}
	return true
}

// triggersConsumerSpec is the triggers consumer as Consumers provisions it.
func triggersConsumerSpec() bus.ConsumerSpec {
	for _, c := range Consumers() {
		if c.Name == TriggersConsumer {
			return c
		}
	}
	panic("no " + TriggersConsumer + " in Consumers")
}

// readChangesAgain hands the stored change events of r's classes since r.Since to the
// triggers, as the live consumer does; a run started already is found and left.
func (s *service) readChangesAgain(ctx, runCtx context.Context, wg *sync.WaitGroup, r triggerReplay) error {
	for _, class := range r.Classes {
		var failed error
		err := readChanges(ctx, s.deps.JS, bus.ChangeSubject(class), 0, r.Since, func(msg jetstream.Msg, seq uint64, _ time.Time) (bool, error) {
			meta, c, err := envelope.DecodeInto[*envelope.Change](msg.Headers(), msg.Data())
			if err != nil {
				return true, nil // the live consumer dead-lettered it
			}
			if err := s.handleChange(ctx, runCtx, wg, meta, c); err != nil {
				failed = fmt.Errorf("change %s (seq %d): %w", meta.ID, seq, err)
				return false, nil
			}
			return true, nil
		})
		if err = errors.Join(err, failed); err != nil {
			return fmt.Errorf("read the change events of class %s again: %w", class, err)
		}
	}
	return nil
}

func (s *service) loadTriggerReplay(ctx context.Context) (*triggerReplay, error) {
	e, err := s.kvLeases.Get(ctx, triggerReplayKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", triggerReplayKey, err)
	}
	var r triggerReplay
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("%s: %w", triggerReplayKey, err)
	}
	return &r, nil
}

func (s *service) saveTriggerReplay(ctx context.Context, r *triggerReplay) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := s.kvLeases.Put(ctx, triggerReplayKey, b); err != nil {
		return fmt.Errorf("write %s: %w", triggerReplayKey, err)
	}
	return nil
}
