package orchestration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
)

// A run is event-sourced. Every change of its state is appended to its own subject of the
// WORKFLOW_RUNS stream (wf.run.<run>.events) before anything that depends on it leaves the
// service; the run's entry in the workflow_runs bucket is a snapshot: the run as of the
// event Seq. Any replica rebuilds a run as its snapshot plus the events after Seq.
//
// An append names the sequence of the run's last event it knows
// (Nats-Expected-Last-Subject-Sequence): a replica that lost the run to another one (it
// was partitioned away, its lease expired) cannot append to the run's history, so it
// cannot overwrite what the new owner decided. It drops the run.
//
// Snapshots are written when a run starts, when it ends, when a step starts to wait for an
// operator or a timer (a run may wait for weeks; its events must not be its only record
// then), and every SnapshotEvery events, so a resume reads a few events per run.

// StreamRuns is the stream of the runs' histories.
const StreamRuns = "WORKFLOW_RUNS"

// runSubject is the subject of one run's history.
func runSubject(run string) string { return "wf.run." + run + ".events" }

// record is one append: the events of one save, in order.
type record struct {
	Events []api.Event `json:"events"`
}

func (s *service) ensureStream(ctx context.Context) (jetstream.Stream, error) {
	// Limits on purpose: histories of finished runs are kept HistoryMaxAge for `runs show`
	// (their snapshot stays in KV); the byte cap bounds the disk; old events go first,
	// which only loses detail of finished runs (an unfinished run is snapshotted at least
	// every SnapshotEvery events and whenever it waits). A record is at most a bus message
	// (1 MiB): a save of more is split (one event is a step's state, its output at most
	// InlineOutput; larger ones are kept by reference).
	cfg := bus.Stream(StreamRuns) // the stores table (libs/bus/stores.go); the config's retention overrides
	cfg.MaxAge, cfg.MaxBytes = s.cfg.HistoryMaxAge, s.cfg.HistoryMaxBytes
	st, err := s.deps.JS.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamRuns, err)
	}
	return st, nil
}

// errFenced: another replica appended to the run's history meanwhile; this one's copy of
// the run is stale.
var errFenced = errors.New("another orchestration replica advanced this run meanwhile: this replica's copy is stale and is dropped")

// save appends what changed in the run since it was last saved to its history, and writes
// a snapshot when one is due (caller holds a.mu).
func (s *service) save(ctx context.Context, a *active) error { return s.saveRun(ctx, a, false) }

// saveRun is save; lazy leaves a change that only marks probes as sent for the run's next
// save (a resume re-sends an attempt not marked sent, under the same probe id: JetStream and
// the bridge drop it).
func (s *service) saveRun(ctx context.Context, a *active, lazy bool) error {
	if a.fenced {
		return errFenced
	}
	if s.hold != nil && s.hold.Lost() {
		return errors.New("this orchestration replica lost its lease")
	}
	r := a.run
	now := s.now()
	was := r.Updated
	r.Updated = now // as folding the events makes it
	evs, changed := diff(a.persisted, r, now)
	if len(evs) == 0 || (lazy && onlySent(evs)) {
		r.Updated = was
		return nil
	}
	recs := records(evs, recordBudget)
	snapped := false
	for i, rec := range recs {
		w := &write{msg: &nats.Msg{Subject: runSubject(r.ID), Data: rec}, opts: []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(a.seq)}}
		if a.persisted == nil && len(recs) == 1 && i == 0 {
			// a new run: its first snapshot (as of no event, Seq 0: the run.started event
			// rebuilds it whole) travels in the same batch as its first record. A snapshot
			// whose record did not make it is no run: load refuses it.
			sb, _ := json.Marshal(r)
			snap := &write{msg: &nats.Msg{Subject: snapshotSubject(r.ID), Data: sb}}
			s.journal.submit(w, snap)
			<-snap.done
			snapped = snap.err == nil
		} else {
			s.journal.submit(w)
		}
		<-w.done
		ack, err := w.ack, w.err
		if err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
				a.fenced = true
				s.log.Warn("run fenced", "run", r.ID, "err", err)
				return errFenced
			}
			// a part of this save may be on record: each event is a whole step's state, so
			// the history stays a valid (older) state of the run; the next save repeats
			// what is missing, as nothing is committed to persisted yet
			return fmt.Errorf("record run %s: %w", r.ID, err)
		}
		a.seq = ack.Sequence
	}
	r.Seq = a.seq
	if a.persisted == nil {
		a.persisted = persistedOf(r)
	} else {
		a.persisted.commit(r, changed)
	}
	a.unsnapped++
	if snapped {
		a.unsnapped = 0
	} else if r.Done() || a.unsnapped >= s.cfg.SnapshotEvery || startedWaiting(evs) || evs[0].typ == "run.started" {
		if err := s.writeSnapshot(ctx, r); err != nil {
			// the history has it: a later snapshot or a resume catches up
			s.log.Warn("snapshot run", "run", r.ID, "err", err)
		} else {
			a.unsnapped = 0
		}
	}
	return nil
}

// recordBudget is the most bytes of events put in one record (the bus carries 1 MiB).
const recordBudget = 768 << 10

// event is one event of a save, encoded once (as api.Event) when diff finds it.
type event struct {
	typ  string
	into string // the state a step event puts the step in
	raw  []byte
}

// wireEvent is api.Event with the step's state already encoded (diff has its JSON).
type wireEvent struct {
	Type    string          `json:"type"`
	Time    time.Time       `json:"time"`
	Step    string          `json:"step,omitempty"`
	Attempt int             `json:"attempt,omitempty"`
	Run     *api.Run        `json:"run,omitempty"`
	Into    json.RawMessage `json:"into,omitempty"`
}

// records joins a save's events into records ({"events":[…]}) of at most budget bytes
// (an event alone may be larger: the stream then refuses it, and the save fails loudly).
func records(evs []event, budget int) [][]byte {
	var out [][]byte
	var cur []byte
	for _, e := range evs {
		if cur != nil && len(cur)+len(e.raw)+2 > budget {
			out = append(out, append(cur, "]}"...))
			cur = nil
		}
		if cur == nil {
			cur = append(make([]byte, 0, 64+len(e.raw)), `{"events":[`...)
		} else {
			cur = append(cur, ',')
		}
		cur = append(cur, e.raw...)
	}
	return append(out, append(cur, "]}"...))
}

func onlySent(evs []event) bool {
	for _, e := range evs {
		if e.typ != "attempt.sent" {
			return false
		}
	}
	return true
}

func startedWaiting(evs []event) bool {
	for _, e := range evs {
		if e.into == api.StepWaiting || e.into == api.StepRetrying {
			return true
		}
	}
	return false
}

func (s *service) writeSnapshot(ctx context.Context, r *api.Run) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if s.journal == nil {
		_, err = s.kvRuns.Put(context.WithoutCancel(ctx), r.ID, b)
		return err
	}
	// a KV put is a publish on the bucket's subject: it rides in the journal's batch
	_, err = s.journal.publish(&nats.Msg{Subject: snapshotSubject(r.ID), Data: b})
	return err
}

// snapshotSubject is where a put of the run's snapshot in KVRuns goes.
func snapshotSubject(run string) string { return "$KV." + KVRuns + "." + run }

// persisted is a run as its history has it, each step as JSON: what the next save
// compares the run with.
type persisted struct {
	head   api.Run // without steps
	steps  map[string][]byte
	states map[string]string
	last   map[string]lastAttempt
}

// lastAttempt is what diff needs of a step's last attempt as saved, to name the event.
type lastAttempt struct {
	attempts     int
	sent         bool
	attemptState string
}

func lastOf(st *api.StepRun) lastAttempt {
	l := lastAttempt{attempts: len(st.Attempts)}
	if l.attempts > 0 {
		a := &st.Attempts[l.attempts-1]
		l.sent, l.attemptState = a.Sent != nil, a.State
	}
	return l
}

func persistedOf(r *api.Run) *persisted {
	p := &persisted{head: *r, steps: make(map[string][]byte, len(r.Steps)), states: make(map[string]string, len(r.Steps)),
		last: make(map[string]lastAttempt, len(r.Steps))}
	p.head.Steps = nil
	for i := range r.Steps {
		b, _ := json.Marshal(&r.Steps[i])
		p.steps[r.Steps[i].ID] = b
		p.states[r.Steps[i].ID] = r.Steps[i].State
		p.last[r.Steps[i].ID] = lastOf(&r.Steps[i])
	}
	return p
}

// settled reports whether a step cannot have changed since it was saved: nothing changes
// a step while it stays pending or once it is done, so only the others are compared (a
// for_each of thousands of items saves in time proportional to those in flight).
func (p *persisted) settled(st *api.StepRun) bool {
	was, ok := p.states[st.ID]
	return ok && was == st.State && (st.State == api.StepPending || terminal(st.State))
}

// diff lists the events that turn old into cur (old nil: the run just started), each
// encoded, and the steps' new JSON, for commit once the events are on record.
func diff(old *persisted, cur *api.Run, now time.Time) ([]event, map[string][]byte) {
	enc := func(w wireEvent) []byte {
		b, _ := json.Marshal(w)
		return b
	}
	if old == nil {
		return []event{{typ: "run.started", raw: enc(wireEvent{Type: "run.started", Time: now, Run: cur})}}, nil
	}
	var evs []event
	changed := map[string][]byte{}
	for i := range cur.Steps {
		n := &cur.Steps[i]
		if old.settled(n) {
			continue
		}
		nb, _ := json.Marshal(n)
		ob, had := old.steps[n.ID]
		if had && bytes.Equal(ob, nb) {
			continue
		}
		changed[n.ID] = nb
		typ := "step.added"
		if had {
			typ = "step.updated"
			o := old.last[n.ID]
			na := len(n.Attempts)
			switch {
			case old.states[n.ID] != n.State:
				typ = "step." + n.State
			case na > o.attempts:
				typ = "attempt.started"
			case na > 0 && o.attempts == na && !o.sent && n.Attempts[na-1].Sent != nil:
				typ = "attempt.sent"
			case na > 0 && o.attempts == na && o.attemptState != n.Attempts[na-1].State:
				typ = "attempt." + n.Attempts[na-1].State
			}
		}
		evs = append(evs, event{typ: typ, into: n.State,
			raw: enc(wireEvent{Type: typ, Time: now, Step: n.ID, Attempt: len(n.Attempts), Into: nb})})
	}
	h := &old.head
	if h.State != cur.State || h.Reason != cur.Reason || h.CancelRequested != cur.CancelRequested || (h.Finished == nil) != (cur.Finished == nil) {
		head := *cur
		head.Steps = nil
		typ := "run." + cur.State
		if h.State == cur.State && cur.CancelRequested && !h.CancelRequested {
			typ = "run.cancel_requested"
		}
		evs = append(evs, event{typ: typ, raw: enc(wireEvent{Type: typ, Time: now, Run: &head})})
	}
	return evs, changed
}

// commit brings p up to cur once the events of diff are on record.
func (p *persisted) commit(cur *api.Run, changed map[string][]byte) {
	p.head = *cur
	p.head.Steps = nil
	for id, b := range changed {
		p.steps[id] = b
	}
	for i := range cur.Steps {
		if _, ok := changed[cur.Steps[i].ID]; ok {
			p.states[cur.Steps[i].ID] = cur.Steps[i].State
			p.last[cur.Steps[i].ID] = lastOf(&cur.Steps[i])
		}
	}
}

// fold applies one event to a run.
func fold(r *api.Run, e api.Event) {
	switch {
	case e.Type == "run.started" && e.Run != nil:
		*r = snapshot(e.Run)
	case e.Into != nil:
		if st := r.Step(e.Into.ID); st != nil {
			*st = *e.Into
		} else {
			r.Steps = append(r.Steps, *e.Into)
		}
	case e.Run != nil:
		steps := r.Steps
		*r = *e.Run
		r.Steps = steps
	}
	if !e.Time.IsZero() {
		r.Updated = e.Time
	}
}

// history reads the events of a run after sequence after, in order, and the sequence of
// the run's last event (after when it has none since).
func (s *service) history(ctx context.Context, run string, after uint64) ([]api.Event, uint64, error) {
	last, err := s.stream.GetLastMsgForSubject(ctx, runSubject(run))
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, after, nil
		}
		return nil, after, err
	}
	if last.Sequence <= after {
		return nil, after, nil
	}
	c, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{runSubject(run)},
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1})
	if err != nil {
		return nil, after, err
	}
	var out []api.Event
	seq := after
	waited := false
	for seq < last.Sequence {
		// no wait: what is stored answers at once (Fetch would wait for a full batch)
		batch, err := c.FetchNoWait(256)
		if err != nil {
			return nil, after, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if seq, err = s.appendRecord(&out, run, m); err != nil {
				return nil, after, err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, after, err
		}
		if n == 0 && !waited {
			// the consumer may not have the stored messages at hand yet: wait once
			waited = true
			if batch, err = c.Fetch(1, jetstream.FetchMaxWait(2*time.Second)); err != nil {
				return nil, after, err
			}
			for m := range batch.Messages() {
				n++
				if seq, err = s.appendRecord(&out, run, m); err != nil {
					return nil, after, err
				}
			}
		}
		if n == 0 {
			return nil, after, fmt.Errorf("run %s: history ends at %d, its last event is %d (events removed by the stream's limits?)", run, seq, last.Sequence)
		}
	}
	return out, seq, nil
}

// appendRecord decodes one record of a run's history onto out; it returns its sequence.
func (s *service) appendRecord(out *[]api.Event, run string, m jetstream.Msg) (uint64, error) {
	md, err := m.Metadata()
	if err != nil {
		return 0, err
	}
	seq := md.Sequence.Stream
	var rec record
	if err := json.Unmarshal(m.Data(), &rec); err != nil {
		return 0, fmt.Errorf("run %s: event %d: %w", run, seq, err)
	}
	for _, e := range rec.Events {
		e.Seq = seq
		*out = append(*out, e)
	}
	return seq, nil
}

// load rebuilds a run from its snapshot and the events after it.
func (s *service) load(ctx context.Context, id string) (*api.Run, error) {
	e, err := s.kvRuns.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	var r api.Run
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("run %s: snapshot: %w", id, err)
	}
	evs, last, err := s.history(ctx, id, r.Seq)
	if err != nil {
		return nil, err
	}
	if r.Seq == 0 && len(evs) == 0 {
		// its first snapshot went out with its run.started record, which did not make it:
		// the run never started (its caller was told so)
		return nil, fmt.Errorf("run %s: %w (its start was not recorded)", id, jetstream.ErrKeyNotFound)
	}
	for _, ev := range evs {
		fold(&r, ev)
	}
	r.Seq = last
	return &r, nil
}
