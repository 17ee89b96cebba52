package discovery

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/lease"
	"github.com/outpost-dev/outpost/libs/telemetry"
)

// owner spreads runs over active replicas (Config.ShareRuns). A run's state lives in the
// memory of the replica that advances it, so each run is owned by one replica: the holder of
// its run lease (RunLeaseKey, libs/lease with its fencing tokens: a replica past its lease
// writes nothing — no run, host or pending record, no probe, no payload).
//
//   - Fair share: live replicas announce themselves with a member key whose TTL is the
//     lease's; a replica takes a free run (no lease key) while it owns fewer than its share
//     (live runs / live replicas, rounded up), every ActiveLease/4. A new run stays with the
//     replica that started it when that one is under its share, else it is written queued
//     and left to the others. Runs in flight are not moved to balance: moving one costs its
//     probes in flight (sent again by the next owner), so new runs do the balancing.
//   - Results: the results and receipts consumers stay shared (one durable each, every
//     replica pulls). A result of a run another replica owns is handed over to the owner by a
//     request on its handoff subject and acknowledged only once the owner applied it, so
//     nothing is lost and no delivery is spent on the detour. A handover that fails (the
//     owner died and its lease has not expired yet) is retried, then nacked: by then the
//     lease expired and whoever gets the result takes the run.
//   - A replica that dies loses its runs when their leases expire (ActiveLease); the others
//     take them on their next pass, or at once when a result of one arrives. A stopping
//     replica saves its runs and deletes their leases, so they move at once.
//
// Schedules and retention stay with the holder of the active lease (ActiveLeaseKey).
type owner struct {
	s      *service
	member string // this replica's member key
	inbox  string // this replica's handoff subject

	// claimMu makes claims one at a time: two leases of one key in one process would both
	// believe they hold it (the same holder name takes its own key back).
	claimMu sync.Mutex
	members atomic.Int64
	live    atomic.Int64 // runs not finished at the last pass, and the ones started since

	mu sync.Mutex
	// skip are keys of the runs bucket that are no run to take: finished runs, another
	// service's keys, replay runs of another replica. Bounded by retention (pruned keys
	// are dropped at the next pass).
	skip map[string]bool

	// holders caches who owns runs of other replicas for ttl/4, sparing a KV read per
	// result handed over; a failed handover forgets the entry.
	holders map[string]holderSeen

	sub      *nats.Subscription
	nudges   *nats.Subscription
	nudge    chan struct{} // a claim pass now: a replica left a new run to the others
	sem      chan struct{}
	handlers sync.WaitGroup // handoffs being applied
	wg       sync.WaitGroup // watchers of the runs' leases
}

type holderSeen struct {
	replica string
	at      time.Time
}

// RunLeaseKey is the key of the leases bucket held by the replica that owns run id
// (Config.ShareRuns).
func RunLeaseKey(id string) string { return runLeasePrefix + keyUnsafe.ReplaceAllString(id, "_") }

const (
	runLeasePrefix = "discovery.run."
	memberPrefix   = "discovery.member."
	handoffPrefix  = "svc.discovery.handoff."
	// claimSubject: a replica that left a new run to the others (over its share) asks them
	// for a claim pass now rather than at their next tick.
	claimSubject = "svc.discovery.claim"
)

var keyUnsafe = regexp.MustCompile(`[^A-Za-z0-9_-]`)

func newOwner(s *service) *owner {
	name := keyUnsafe.ReplaceAllString(s.cfg.Replica, "_")
	o := &owner{s: s, member: memberPrefix + name, inbox: handoffPrefix + name, skip: map[string]bool{}, holders: map[string]holderSeen{}, nudge: make(chan struct{}, 1), sem: make(chan struct{}, 64)}
	o.members.Store(1)
	return o
}

// ttl is the runs' lease TTL.
func (o *owner) ttl() time.Duration { return o.s.cfg.ActiveLease }

// run announces the replica and claims free runs within its share until ctx ends.
func (o *owner) run(ctx context.Context) {
	t := o.s.clock.NewTicker(o.ttl() / 4)
	defer t.Stop()
	for {
		o.announce(ctx)
		if err := o.claim(ctx); err != nil && ctx.Err() == nil {
			o.s.log.Warn("discovery: cannot look for runs to take; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-o.nudge:
		}
	}
}

// leave asks the other replicas for a claim pass: a run was left to them.
func (o *owner) leave() {
	if err := o.s.deps.NC.Publish(claimSubject, nil); err != nil {
		o.s.log.Warn("discovery: cannot ask the other replicas to take a run; they look at their next pass", "err", err)
	}
}

// announce writes the member key (TTL: the lease's) and counts the live members.
func (o *owner) announce(ctx context.Context) {
	kv := o.s.kvLeases
	pctx, cancel := context.WithTimeout(ctx, o.ttl()/4)
	defer cancel()
	if _, err := o.s.deps.JS.Publish(pctx, "$KV."+kv.Bucket()+"."+o.member, []byte(o.s.cfg.Replica), jetstream.WithMsgTTL(o.ttl())); err != nil {
		return
	}
	o.countMembers(pctx)
}

// countMembers counts the member keys (kept as it was when they cannot be read).
func (o *owner) countMembers(ctx context.Context) {
	keys, err := o.s.kvLeases.ListKeysFiltered(ctx, memberPrefix+">")
	if err != nil {
		return
	}
	n := int64(0)
	for range keys.Keys() {
		n++
	}
	o.members.Store(max(n, 1))
}

// owned counts the runs this replica owns.
func (o *owner) owned() int {
	o.s.mu.Lock()
	defer o.s.mu.Unlock()
	return len(o.s.runs)
}

// share is this replica's fair share of live runs.
func (o *owner) share(live int64) int {
	m := o.members.Load()
	return int((live + m - 1) / m)
}

// keepNew reports whether a run just started here stays here: under the share counting it.
// The members are counted afresh: a replica that joined since the last pass gets its part.
func (o *owner) keepNew(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	o.countMembers(cctx)
	cancel()
	live := o.live.Add(1)
	return o.owned() < o.share(max(live, int64(o.owned())+1))
}

// claim is one pass over the runs bucket: the live runs are counted and free ones taken,
// oldest first, while this replica owns fewer than its share. A record that cannot be read
// is reported (the first few) but does not stop the pass: the runs that can be read are
// still taken. Records are read through the runs stream's leader on a cluster
// (leaderkv.go): a replica that read them from a follower, or through a handle left with
// direct gets, saw runs as missing and took none.
func (o *owner) claim(ctx context.Context) error {
	keys, err := o.s.kvRuns.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		o.live.Store(0)
		return nil
	}
	if err != nil {
		return err
	}
	type cand struct {
		id      string
		created time.Time
	}
	var free []cand
	var unread []error // records that could not be read: the others are still taken
	seen := map[string]bool{}
	live := int64(0)
	for k := range keys.Keys() {
		seen[k] = true
		o.mu.Lock()
		skip := o.skip[k]
		o.mu.Unlock()
		if skip {
			continue
		}
		o.s.mu.Lock()
		_, mine := o.s.runs[k]
		o.s.mu.Unlock()
		if mine {
			live++
			continue
		}
		r, ok, err := o.record(ctx, k)
		if err != nil {
			if len(unread) < 3 {
				unread = append(unread, fmt.Errorf("run %s: %w", k, err))
			}
			continue
		}
		if !ok {
			continue
		}
		live++
		free = append(free, cand{k, r.Created})
	}
	o.mu.Lock()
	for k := range o.skip {
		if !seen[k] {
			delete(o.skip, k) // pruned by retention
		}
	}
	o.mu.Unlock()
	o.live.Store(live)
	slices.SortFunc(free, func(a, b cand) int { return cmp.Or(a.created.Compare(b.created), cmp.Compare(a.id, b.id)) })
	for _, c := range free {
		if ctx.Err() != nil || o.owned() >= o.share(live) {
			break
		}
		if _, err := o.take(ctx, c.id); err != nil {
			o.s.log.Warn("discovery: cannot take run", "run", c.id, "err", err)
		}
	}
	return errors.Join(unread...)
}

// record reads a run record: ok false when the key is no run this replica could take
// (remembered in skip when that cannot change).
func (o *owner) record(ctx context.Context, id string) (*RunRecord, bool, error) {
	e, err := o.s.kvRuns.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var r RunRecord
	if json.Unmarshal(e.Value(), &r) != nil || r.Site == "" || terminalState(r.State) ||
		(r.ReplayOf != "" && o.s.replayOf(id) == nil) {
		o.mu.Lock()
		o.skip[id] = true
		o.mu.Unlock()
		return nil, false, nil
	}
	return &r, true, nil
}

// take makes this replica the owner of run id if its lease is free (or this replica's from
// before a restart) and the run is not finished: its lease is taken, its state loaded, and
// it is advanced from the next tick on. nil: the run is another replica's, finished or
// unknown.
func (o *owner) take(ctx context.Context, id string) (*runState, error) {
	o.claimMu.Lock()
	defer o.claimMu.Unlock()
	o.s.mu.Lock()
	rs := o.s.runs[id]
	o.s.mu.Unlock()
	if rs != nil {
		return rs, nil
	}
	if _, ok, err := o.record(ctx, id); !ok || err != nil {
		return nil, err
	}
	l := o.lease(id)
	held, ok, err := l.Take(ctx)
	if !ok {
		return nil, err
	}
	// s.load reads the run's hosts and pending groups after the lease is ours: what the
	// previous owner wrote under its own token is all there, and nothing it writes late
	// can overwrite what this replica writes (libs/lease.Store)
	rs, err = o.s.load(ctx, id, l, held)
	if rs == nil || err != nil {
		l.Drop(context.WithoutCancel(ctx))
		return nil, err
	}
	fence, _ := l.Token()
	o.s.log.Info("discovery run taken", "run", id, "replica", o.s.cfg.Replica, "fence", fence)
	o.watch(rs)
	return rs, nil
}

func (o *owner) lease(id string) *lease.Active {
	return lease.New(lease.Config{JS: o.s.deps.JS, KV: o.s.kvLeases, Key: RunLeaseKey(id), Holder: o.s.cfg.Replica, TTL: o.ttl(),
		Clock: o.s.clock, Logger: o.s.log.With("run", id), Name: Service + " run"})
}

// hold gives a new run its own lease (start, api.go). The leases bucket may not answer for
// a moment (a cluster node lost, a stream leader elected): tried three times over a second
// before the start fails.
func (o *owner) hold(ctx context.Context, rs *runState) error {
	l := o.lease(rs.run.ID)
	held, ok, err := l.Take(ctx)
	for wait := 200 * time.Millisecond; err != nil && wait <= 800*time.Millisecond && ctx.Err() == nil; wait *= 2 {
		select {
		case <-ctx.Done():
		case <-time.After(wait): // real time: a fake clock of a test would never move it
		}
		held, ok, err = l.Take(ctx)
	}
	if err != nil {
		return fmt.Errorf("run lease: %w", err)
	}
	if !ok {
		return fmt.Errorf("run lease %s is held by another replica", RunLeaseKey(rs.run.ID))
	}
	rs.held = held
	o.s.bind(rs, l)
	return nil
}

// watch drops the run from memory when its lease is lost: the next owner has it.
func (o *owner) watch(rs *runState) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		<-rs.held.Done()
		o.s.mu.Lock()
		mine := o.s.runs[rs.run.ID] == rs
		if mine {
			delete(o.s.runs, rs.run.ID)
		}
		o.s.mu.Unlock()
		if mine && rs.lease.Lost() {
			o.s.log.Warn("discovery run lease lost: another replica owns the run now", "run", rs.run.ID, "replica", o.s.cfg.Replica)
		}
	}()
}

// drop gives a run's lease up: the run finished, or this replica stops.
func (o *owner) drop(rs *runState) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs.lease.Drop(ctx)
}

// quiesce stops taking handoffs and waits for the ones being applied: then the runs' state
// can be saved for the last time. A handoff not applied is not acknowledged by its sender:
// the result is delivered again, to the run's next owner.
func (o *owner) quiesce() {
	if o.sub == nil {
		return
	}
	_ = o.nudges.Unsubscribe()
	_ = o.sub.Drain()
	for end := time.Now().Add(5 * time.Second); o.sub.IsValid() && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	o.handlers.Wait()
}

// stop gives every run up (their state was saved) and withdraws the member key, so the
// other replicas take the runs at once.
func (o *owner) stop(ctx context.Context) {
	o.s.mu.Lock()
	states := make([]*runState, 0, len(o.s.runs))
	for _, rs := range o.s.runs {
		states = append(states, rs)
	}
	o.s.mu.Unlock()
	for _, rs := range states {
		o.drop(rs)
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_ = o.s.kvLeases.Delete(dctx, o.member)
	cancel()
	o.wg.Wait()
}

// ownerOf finds who owns run id: this replica (rs, taking the run when it is free — its
// replica died — or still this replica's from before a restart), another one (holder), or
// nobody because the run is finished or unknown (both zero).
func (o *owner) ownerOf(ctx context.Context, id string) (*runState, string, error) {
	for attempt := 0; attempt < 2; attempt++ {
		o.s.mu.Lock()
		rs := o.s.runs[id]
		o.s.mu.Unlock()
		if rs != nil {
			return rs, "", nil
		}
		now := o.s.clock.Now()
		o.mu.Lock()
		hs, cached := o.holders[id]
		o.mu.Unlock()
		if cached && now.Sub(hs.at) < o.ttl()/4 {
			return nil, hs.replica, nil
		}
		e, err := o.s.kvLeases.Get(ctx, RunLeaseKey(id))
		switch {
		case err == nil && string(e.Value()) != o.s.cfg.Replica:
			o.mu.Lock()
			if len(o.holders) > 10000 {
				clear(o.holders) // bounded: runs come and go
			}
			o.holders[id] = holderSeen{string(e.Value()), now}
			o.mu.Unlock()
			return nil, string(e.Value()), nil
		case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
			return nil, "", err
		}
		rs, err = o.take(ctx, id)
		if rs != nil || err != nil {
			return rs, "", err
		}
		// not taken: finished or unknown, or another replica took it meanwhile (look again)
	}
	return nil, "", nil
}

// handoff is a result, receipt or cancel request handed to the owner of its run.
type handoff struct {
	Kind        string             `json:"kind"`
	Run         string             `json:"run"`
	TraceParent string             `json:"traceparent,omitempty"`
	Result      *envelope.Result   `json:"result,omitempty"`
	Meta        *envelope.Meta     `json:"meta,omitempty"`
	Ingested    *envelope.Ingested `json:"ingested,omitempty"`
}

const (
	handoffResult  = "result"
	handoffReceipt = "receipt"
	handoffCancel  = "cancel"
)

// handoffReply is the owner's answer: Error empty when it applied the message.
type handoffReply struct {
	Error  string                    `json:"error,omitempty"`
	Cancel *discoveryapi.CancelReply `json:"cancel,omitempty"`
}

// listen serves this replica's handoff subject: messages of runs it owns, applied as if they
// came from the consumers. The sender acks its delivery only on an empty error.
func (o *owner) listen() error {
	sub, err := o.s.deps.NC.Subscribe(o.inbox, func(m *nats.Msg) {
		o.sem <- struct{}{} // bounded: at most the consumers' in-flight messages wait here
		o.handlers.Add(1)
		go func() {
			defer func() { <-o.sem; o.handlers.Done() }()
			rep := o.apply(m.Data)
			b, _ := json.Marshal(rep)
			_ = m.Respond(b)
		}()
	})
	if err != nil {
		return fmt.Errorf("discovery handoff subject %s: %w", o.inbox, err)
	}
	o.sub = sub
	nudges, err := o.s.deps.NC.Subscribe(claimSubject, func(*nats.Msg) {
		select {
		case o.nudge <- struct{}{}:
		default: // a pass is due already
		}
	})
	if err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("discovery claim subject %s: %w", claimSubject, err)
	}
	o.nudges = nudges
	return nil
}

func (o *owner) apply(data []byte) handoffReply {
	var h handoff
	if err := json.Unmarshal(data, &h); err != nil {
		return handoffReply{Error: "bad handoff: " + err.Error()}
	}
	o.s.mu.Lock()
	rs := o.s.runs[h.Run]
	o.s.mu.Unlock()
	if rs == nil {
		return handoffReply{Error: fmt.Sprintf("run %s is not replica %s's (any more)", h.Run, o.s.cfg.Replica)}
	}
	ctx := telemetry.WithTraceParent(context.Background(), h.TraceParent)
	var err error
	switch {
	case h.Kind == handoffResult && h.Result != nil:
		err = o.s.applyResult(ctx, rs, h.Result)
	case h.Kind == handoffReceipt && h.Meta != nil && h.Ingested != nil:
		err = o.s.applyReceipt(ctx, rs, *h.Meta, h.Ingested)
	case h.Kind == handoffCancel:
		rep, err := o.s.cancel(ctx, h.Run)
		if err != nil {
			return handoffReply{Error: err.Error()}
		}
		return handoffReply{Cancel: &rep}
	default:
		err = fmt.Errorf("bad handoff: kind %q without its message", h.Kind)
	}
	if err != nil {
		return handoffReply{Error: err.Error()}
	}
	return handoffReply{}
}

// forward hands a message to the owner of its run and waits until it is applied.
func (o *owner) forward(ctx context.Context, holder string, h handoff) error {
	_, err := o.request(ctx, holder, h)
	return err
}

func (o *owner) forwardCancel(ctx context.Context, holder, id string) (discoveryapi.CancelReply, error) {
	rep, err := o.request(ctx, holder, handoff{Kind: handoffCancel, Run: id})
	if err != nil {
		return discoveryapi.CancelReply{}, err
	}
	if rep.Cancel == nil {
		return discoveryapi.CancelReply{}, fmt.Errorf("cancel run %s: replica %s answered without a state", id, holder)
	}
	return *rep.Cancel, nil
}

func (o *owner) request(ctx context.Context, holder string, h handoff) (rep handoffReply, err error) {
	defer func() {
		if err != nil {
			o.mu.Lock()
			delete(o.holders, h.Run) // look the owner up again on the next attempt
			o.mu.Unlock()
		}
	}()
	h.TraceParent = telemetry.TraceParent(ctx)
	b, err := json.Marshal(h)
	if err != nil {
		return handoffReply{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, 25*time.Second) // the owner's writes take up to 20 s
	defer cancel()
	m, err := o.s.deps.NC.RequestWithContext(rctx, handoffPrefix+keyUnsafe.ReplaceAllString(holder, "_"), b)
	if err != nil {
		return handoffReply{}, fmt.Errorf("hand %s of run %s to its owner %s: %w", h.Kind, h.Run, holder, err)
	}
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return handoffReply{}, fmt.Errorf("hand %s of run %s to its owner %s: bad answer: %w", h.Kind, h.Run, holder, err)
	}
	if rep.Error != "" {
		return handoffReply{}, fmt.Errorf("hand %s of run %s to its owner %s: %s", h.Kind, h.Run, holder, rep.Error)
	}
	return rep, nil
}
