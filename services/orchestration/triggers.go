package orchestration

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/robfig/cron/v3"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Triggers start runs without an operator: `on: {cron: ...}` and `on: {cmdb_change: ...}`
// of the latest version of each definition. (Correlation's remediation calls run_start
// with its alert as the run's trigger.) A trigger-started run records what started it.
//
// Both are at most once per firing, across replicas and redeliveries: the run's id is
// derived from what fired it (the workflow and the slot, or the workflow and the change
// event's id) and a run's first record expects an empty history, so a second start of the
// same firing is refused by the stream. A cron slot is also claimed in the leases bucket
// before it fires (orchestration.cron.<workflow>.<slot>, a create that only one replica
// wins), so a replica that takes over mid-slot does not start it again.

// TriggersConsumer is the durable consumer of CMDB change events for cmdb_change triggers.
const TriggersConsumer = "orchestration-triggers"

// cronParser reads the 5-field schedules of `on: {cron: ...}`.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// cronCatchUp: a replica that becomes active fires the slots of the last cronCatchUp it
// finds due (the one before it may have died just before a slot); older ones are not made up.
const cronCatchUp = 5 * time.Minute

// changeOps are the ops of CMDB change events.
var changeOps = []string{"created", "updated", "stale"}

// validateTriggers checks a definition's `on:`.
func validateTriggers(file string, wf *workflow) []error {
	on := wf.On
	if on == nil {
		return nil
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, &DefinitionError{File: file, Reason: "on: " + fmt.Sprintf(format, args...)})
	}
	if on.Cron == "" && on.CMDBChange == nil {
		bad("no trigger: give cron or cmdb_change")
	}
	if on.Cron != "" {
		if _, err := cronParser.Parse(on.Cron); err != nil {
			bad("cron %q: %v (5 fields: minute hour day-of-month month day-of-week, UTC)", on.Cron, err)
		}
	}
	if c := on.CMDBChange; c != nil {
		if !bus.ValidName(strings.ReplaceAll(c.Class, "_", "-")) {
			bad("cmdb_change.class %q: want a CI class, e.g. linux_server", c.Class)
		}
		if c.Op != "" && !slices.Contains(changeOps, c.Op) {
			bad("cmdb_change.op %q: want one of %s", c.Op, strings.Join(changeOps, ", "))
		}
	}
	names := make([]string, 0, len(on.Inputs))
	for n := range on.Inputs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, ok := wf.Inputs[n]; !ok {
			bad("inputs.%s: the workflow declares no such input", n)
			continue
		}
		for _, e := range expressionsIn(on.Inputs[n]) {
			if _, err := compileTrigger(e); err != nil {
				bad("inputs.%s: %v", n, err)
			}
		}
	}
	for n, in := range wf.Inputs {
		if _, given := on.Inputs[n]; in.Required && in.Default == nil && !given {
			bad("input %s is required and has no default: give it in on.inputs (e.g. %s: '${{ event.ci }}')", n, n)
		}
	}
	return errs
}

// compileTrigger checks a trigger input's expression against the event's shape.
func compileTrigger(text string) (any, error) {
	env := map[string]any{"event": map[string]any{"ci": "", "class": "", "op": "", "source": "", "attributes": []any{}, "slot": "", "id": ""}}
	return eval(text, env)
}

// triggerInputs renders a definition's on.inputs for one firing.
func triggerInputs(on *api.Triggers, event map[string]any) (map[string]any, error) {
	out := map[string]any{}
	for n, v := range on.Inputs {
		r, err := render(v, map[string]any{"event": event})
		if err != nil {
			return nil, fmt.Errorf("on.inputs.%s: %w", n, err)
		}
		out[n] = r
	}
	return out, nil
}

// firingID is the run id of one firing: a ULID of the firing's time whose entropy is a
// digest of what fired, the same on every replica and every redelivery.
func firingID(at time.Time, what string) string {
	sum := sha256.Sum256([]byte(what))
	var id ulid.ULID
	_ = id.SetTime(ulid.Timestamp(at))
	_ = id.SetEntropy(sum[:10])
	return id.String()
}

// triggered is a definition with triggers (its latest version).
type triggered struct {
	d     api.Definition
	sched cron.Schedule // nil: no cron
}

// triggeredDefs lists the latest versions of definitions with triggers.
func (s *service) triggeredDefs(ctx context.Context) []triggered {
	var out []triggered
	for _, name := range s.defs.names() {
		d, wf, err := s.runnable(ctx, name, 0)
		if err != nil || wf.On == nil {
			continue
		}
		t := triggered{d: d}
		if wf.On.Cron != "" {
			t.sched, _ = cronParser.Parse(wf.On.Cron)
		}
		out = append(out, t)
	}
	return out
}

// cronLoop fires the cron triggers until ctx ends; the runs it starts belong to runCtx.
func (s *service) cronLoop(ctx, runCtx context.Context, wg *sync.WaitGroup) {
	from := s.now().Add(-cronCatchUp)
	last := map[string]time.Time{} // workflow → the last slot considered
	for ctx.Err() == nil {
		now := s.now()
		var next time.Time
		for _, t := range s.triggeredDefs(ctx) {
			if t.sched == nil {
				continue
			}
			name := t.d.Name
			prev, seen := last[name]
			if !seen {
				prev = from
			}
			// the latest due slot fires; earlier due ones are not made up
			var due time.Time
			for slot := t.sched.Next(prev); !slot.After(now); slot = t.sched.Next(slot) {
				due = slot
			}
			if !due.IsZero() {
				s.fireCron(ctx, runCtx, wg, t.d, due)
				prev = due
			} else if !seen {
				prev = now
			}
			last[name] = prev
			if n := t.sched.Next(prev); next.IsZero() || n.Before(next) {
				next = n
			}
		}
		var fire <-chan time.Time
		var timer clock.Timer
		if !next.IsZero() {
			timer = s.clock.NewTimer(next.Sub(now))
			fire = timer.C()
			if s.cronArmed != nil {
				s.cronArmed(next)
			}
		}
		select {
		case <-ctx.Done():
		case <-fire:
		case <-s.defs.changed:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// fireCron claims one slot of a workflow's schedule and starts its run.
func (s *service) fireCron(ctx, runCtx context.Context, wg *sync.WaitGroup, d api.Definition, slot time.Time) {
	key := fmt.Sprintf("orchestration.cron.%s.%d", d.Name, slot.Unix())
	id := firingID(slot, "cron "+d.Name+" "+slot.UTC().Format(time.RFC3339))
	if _, err := s.kvLeases.Create(ctx, key, []byte(id), jetstream.KeyTTL(24*time.Hour)); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			s.log.Warn("cron slot not claimed: not fired", "workflow", d.Name, "slot", slot, "err", err)
			return
		}
		// claimed already: by a replica that started the slot's run, or that died between
		// the claim and the start. The run's id is the slot's, so the start below is refused
		// when the run exists (errStartedAlready) and completes the firing when it does not.
		s.log.Debug("cron slot claimed already: starting its run unless it exists", "workflow", d.Name, "slot", slot)
	}
	if s.crashPoint != nil {
		s.crashPoint(ctx, "cron-claimed")
	}
	inputs, err := triggerInputs(d.Workflow.On, map[string]any{"slot": slot.UTC().Format(time.RFC3339), "id": id})
	if err != nil {
		s.log.Warn("cron trigger: inputs", "workflow", d.Name, "slot", slot, "err", err)
		return
	}
	trig := &api.Trigger{Kind: "cron", Slot: slot.UTC(), Detail: "cron " + d.Workflow.On.Cron}
	if _, err := s.startRunAs(ctx, runCtx, wg, api.RunRequest{Name: d.Name, RunOptions: api.RunOptions{Version: d.Version, Inputs: inputs}}, id, nil, trig); err != nil && !errors.Is(err, errStartedAlready) {
		s.log.Warn("cron trigger: run not started", "workflow", d.Name, "slot", slot, "err", err)
	}
}

// changeFiring is one cmdb_change trigger a change event matches: the run it starts.
type changeFiring struct {
	d   api.Definition
	id  string // the run's, derived from the change event's id
	req api.RunRequest
	trg *api.Trigger
}

// changeFirings lists the firings of a change event: one per latest definition whose
// cmdb_change filter it matches. A trigger whose inputs do not render is logged and skipped.
func (s *service) changeFirings(ctx context.Context, meta envelope.Meta, c *envelope.Change) []changeFiring {
	var out []changeFiring
	for _, t := range s.triggeredDefs(ctx) {
		m := t.d.Workflow.On.CMDBChange
		if m == nil || m.Class != c.Class || (m.Op != "" && m.Op != c.Op) || (m.Attribute != "" && !slices.Contains(c.Attributes, m.Attribute)) {
			continue
		}
		if c.Time.Before(t.d.Added) {
			continue // a change from before this version was added (the consumer starts at the stream's beginning)
		}
		attrs := make([]any, len(c.Attributes))
		for i, a := range c.Attributes {
			attrs[i] = a
		}
		id := firingID(c.Time, "cmdb_change "+t.d.Name+" "+meta.ID)
		event := map[string]any{"ci": c.CI, "class": c.Class, "op": c.Op, "source": c.Source, "attributes": attrs, "id": meta.ID}
		inputs, err := triggerInputs(t.d.Workflow.On, event)
		if err != nil {
			s.log.Warn("cmdb_change trigger: inputs", "workflow", t.d.Name, "change", meta.ID, "err", err)
			continue
		}
		trig := &api.Trigger{Kind: "cmdb_change", Event: meta.ID,
			Detail: fmt.Sprintf("%s %s %s (%s) by %s", c.Class, c.CI, c.Op, strings.Join(c.Attributes, ", "), c.Source)}
		out = append(out, changeFiring{d: t.d, id: id, trg: trig,
			req: api.RunRequest{Name: t.d.Name, RunOptions: api.RunOptions{Version: t.d.Version, Inputs: inputs}}})
	}
	return out
}

// watchedChanges passes on the change events of classes a cmdb_change trigger watches and
// acks the others undecoded: the class is the subject's last token (cmdb.changed.<class>).
// Every CI an import or a discovery creates is a change event; decoding each to find no
// trigger for its class cost the hub about 4 µs per CI.
func (s *service) watchedChanges(h message.NoPublishHandlerFunc) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		class, ok := strings.CutPrefix(msg.Metadata.Get(bus.MetaSubject), "cmdb.changed.")
		if ok && class != "" && !s.watchesClass(msg.Context(), class) {
			return nil
		}
		return h(msg)
	}
}

// watchesClass tells whether a cmdb_change trigger of the latest definitions matches class
// (what changeFirings checks first).
func (s *service) watchesClass(ctx context.Context, class string) bool {
	if len(s.defs.names()) == 0 {
		return false
	}
	for _, t := range s.triggeredDefs(ctx) {
		if m := t.d.Workflow.On.CMDBChange; m != nil && m.Class == class {
			return true
		}
	}
	return false
}

// handleChange starts the runs of the cmdb_change triggers a CMDB change event matches.
func (s *service) handleChange(mctx, ctx context.Context, wg *sync.WaitGroup, meta envelope.Meta, c *envelope.Change) error {
	var errs []error
	for _, f := range s.changeFirings(mctx, meta, c) {
		_, err := s.startRunAs(mctx, ctx, wg, f.req, f.id, nil, f.trg)
		var se *bus.ServiceError
		switch {
		case err == nil, errors.Is(err, errStartedAlready):
		case errors.As(err, &se) && se.Code < 500:
			// the definition refuses these inputs: a redelivery would too
			s.log.Warn("cmdb_change trigger: run refused", "workflow", f.d.Name, "change", meta.ID, "err", err)
		default:
			errs = append(errs, err) // redelivered; runs already started are not started again
		}
	}
	return errors.Join(errs...)
}
