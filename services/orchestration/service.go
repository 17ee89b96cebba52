// Package orchestration runs workflows: DAGs of steps defined in YAML, each step a probe
// run on a site's bridges or a built-in (approval, wait, cmdb_update, notify), with
// expressions, conditions, timeouts and retries. A run's whole state lives in KV and is
// written before anything leaves the service, so any replica resumes any run after a crash,
// and an attempt is dispatched at most once (its idempotency key is the probe id).
package orchestration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/lease"
	"github.com/outpost-dev/outpost/libs/version"
)

// Service is the name on the bus: svc.orchestration.<op>, result.orchestration.>,
// dlq.orchestration; probes it sends carry App "orchestration".
const Service = api.Service

// ResultsConsumer is the durable consumer of the results of the probes of workflow steps.
const ResultsConsumer = "orchestration-results"

// KV buckets of the service.
const (
	KVWorkflows = "workflows"     // <name>.<version, 6 digits> → api.Definition
	KVRuns      = "workflow_runs" // <run id> → api.Run (the run's whole state)
	// KVRunKeys maps a run_start idempotency key (its SHA-256, hex: KV keys cannot hold
	// every character a caller's key may) to the run it started; entries expire after
	// Config.IdempotencyTTL.
	KVRunKeys = "workflow_run_keys"
)

// Deps are what Run needs from its host process.
type Deps struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Logger *slog.Logger
	Tracer trace.TracerProvider
	// Clock drives attempt deadlines, retry backoff, waits, the lease and timestamps;
	// default the real clock. Tests give a clock.Fake.
	Clock clock.Clock
	// HTTP sends notify webhooks; default a client with the step's timeout.
	HTTP *http.Client
}

// Consumers are the durable consumers the service needs; the hub adds them to its topology.
func Consumers() []bus.ConsumerSpec {
	return []bus.ConsumerSpec{{
		Stream: bus.StreamResults, Name: ResultsConsumer, Filters: []string{"result." + Service + ".>"},
		AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 1000,
		Description: "probe results of workflow steps",
	}, {
		// every class as provisioned; narrowed to the classes triggers watch while serving
		// (changefilter.go)
		Stream: bus.StreamChanges, Name: TriggersConsumer, Filters: []string{"cmdb.changed.>"},
		AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 256,
		Description: "CMDB changes for workflows' cmdb_change triggers",
	}}
}

type service struct {
	cfg   Config
	deps  Deps
	clock clock.Clock
	log   *slog.Logger
	pub   *bus.Publisher
	httpc *http.Client

	kvDefs, kvRuns, kvLeases jetstream.KeyValue
	kvRunKeys                jetstream.KeyValue    // idempotency key → run id
	stream                   jetstream.Stream      // StreamRuns: the runs' histories
	outputs                  jetstream.ObjectStore // BucketOutputs: large outputs

	mu   sync.Mutex
	runs map[string]*active // unfinished runs this replica advances
	// closing: serve is awaiting the runs' goroutines; no new one starts
	closing bool

	// journal writes histories, snapshots and probes in batches (journal.go); one per
	// term as the active replica.
	journal *journal
	// defs caches definitions for run starts (defcache.go).
	defs *defCache

	// hold is this replica's active lease (active.go, libs/lease); once lost, what it holds
	// in memory is stale and must not overwrite what the active replica writes.
	hold *lease.Active

	// armed, when set (tests), is told each time a run's goroutine sleeps until at: a
	// test moves its fake clock only once the run waits for it.
	armed func(run string, at time.Time)
	// sites and their ranges for site_of (siteof.go), fetched at sitesAt
	sitesMu sync.Mutex
	sites   []siteRange
	sitesAt time.Time

	// cronArmed, when set (tests), is told the slot the cron loop sleeps until.
	cronArmed func(at time.Time)

	// beforeFilter, when set (tests), is called before the triggers consumer's filter is
	// set (changefilter.go); it may block like a slow server.
	beforeFilter func(ctx context.Context, filters []string)

	// crashPoint, when set (tests), is called at the points where a crash is interesting
	// (probe-recorded, probe-published); it blocks like a dead process until ctx ends.
	crashPoint func(ctx context.Context, point string)
}

// active is an unfinished run in memory, advanced by its own goroutine (drive). Every
// change is written to KV under mu before anything that depends on it leaves the service.
type active struct {
	mu  sync.Mutex
	run *api.Run
	wf  *workflow
	// kick wakes the run's goroutine: a result, an approval, a cancel.
	kick chan struct{}
	// inflight are the keys of built-in attempts running in this process; a running
	// built-in attempt found after a restart is not among them and was interrupted.
	inflight map[string]bool

	// persisted is the run as its history has it (history.go); seq the stream sequence of
	// its last event; unsnapped counts events since the last snapshot.
	persisted *persisted
	seq       uint64
	unsnapped int
	// fenced: another replica appended to the run's history; this copy stops.
	fenced bool
	// fetched are large outputs read for expressions, by reference.
	fetched map[string]any
	// items indexes the items of for_each steps in run.Steps (nil: to be rebuilt).
	items map[string][]int
	// outgoing are the probes this advance prepared, queued their keys: flush records
	// their attempts, then sends them (probe.go).
	outgoing []outgoing
	queued   map[string]bool
	// spawns are child runs to start once their attempts are on record; children the
	// children of workflow attempts in flight (attempt key → run), watching the attempts
	// whose child reports to this run (subworkflow.go).
	spawns   []spawn
	children map[string]string
	watching map[string]bool
	// waiters are results applied to the run and waiting for the save that records them
	// (handleResult acknowledges its message then).
	waiters []chan error
}

func (a *active) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (s *service) now() time.Time { return s.clock.Now().UTC() }

// Run serves orchestration until ctx ends.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("orchestration config: %w", err)
	}
	if deps.NC == nil || deps.JS == nil {
		return errors.New("orchestration: NATS connection and JetStream are required")
	}
	s, err := newService(ctx, cfg, deps)
	if err != nil {
		return err
	}
	return s.serveWhenActive(ctx)
}

func newService(ctx context.Context, cfg Config, deps Deps) (*service, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Replica == "" {
		cfg.Replica = envelope.NewID()
	}
	s := &service{cfg: cfg, deps: deps, clock: clock.Or(deps.Clock), log: log.With("component", Service),
		runs: map[string]*active{}, defs: newDefCache(), pub: bus.NewPublisher(deps.JS, envelope.ServiceSource(Service), deps.Tracer), httpc: deps.HTTP}
	if s.httpc == nil {
		// no redirects: a webhook answers where it was asked
		s.httpc = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	kv := func(spec jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
		b, err := deps.JS.KeyValue(ctx, spec.Bucket)
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("kv %s: %w", spec.Bucket, err)
		}
		spec.Storage = jetstream.FileStorage
		if b, err = deps.JS.CreateOrUpdateKeyValue(ctx, spec); err != nil {
			return nil, fmt.Errorf("kv %s: %w", spec.Bucket, err)
		}
		return b, nil
	}
	var errs []error
	pick := func(b jetstream.KeyValue, err error) jetstream.KeyValue { errs = append(errs, err); return b }
	s.kvDefs = pick(kv(bus.KV(KVWorkflows)))
	s.kvRuns = pick(kv(bus.KV(KVRuns)))
	runKeys := bus.KV(KVRunKeys)
	runKeys.TTL = cfg.IdempotencyTTL // the configured window, not the table's default
	s.kvRunKeys = pick(kv(runKeys))
	s.kvLeases = pick(kv(bus.KV(bus.KVLeases)))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var err error
	if s.stream, err = s.ensureStream(ctx); err != nil {
		return nil, err
	}
	if s.outputs, err = s.ensureOutputs(ctx); err != nil {
		return nil, err
	}
	s.hold = lease.New(lease.Config{JS: deps.JS, KV: s.kvLeases, Key: ActiveLeaseKey, Holder: cfg.Replica, TTL: cfg.ActiveLease,
		Clock: s.clock, Logger: s.log, Name: Service})
	return s, nil
}

// serve runs while this replica holds the active lease.
func (s *service) serve(ctx context.Context) error {
	for _, c := range Consumers() {
		if _, err := s.deps.JS.CreateOrUpdateConsumer(ctx, c.Stream, c.Config()); err != nil {
			return fmt.Errorf("orchestration consumer %s: %w", c.Name, err)
		}
	}
	// the journal outlives the runs' goroutines of this term (they are awaited below), so
	// it stops only once serve returns
	jctx, jstop := context.WithCancel(context.WithoutCancel(ctx))
	s.journal = newJournal(s.deps.JS)
	jdone := make(chan struct{})
	go func() { defer close(jdone); s.journal.run(jctx) }()
	defer func() { jstop(); <-jdone }()
	// the watch and the cron loop end with this term, also when serve fails and is retried
	tctx, tstop := context.WithCancel(ctx)
	defer tstop()
	go func() {
		if err := s.defs.watch(tctx, s.kvDefs); err != nil && tctx.Err() == nil {
			s.log.Warn("watch definitions: run starts read them from the bucket", "err", err)
		}
	}()
	// results are taken by many handlers at once: their appends share the journal's batches
	router, err := bus.NewRouter(s.deps.NC, s.deps.JS, bus.RouterConfig{Service: Service,
		Topology: bus.Topology{Consumers: Consumers()}, MaxInFlight: 512, Logger: s.log, Tracer: s.deps.Tracer})
	if err != nil {
		return err
	}
	if err := router.Handle("orchestration-results", ResultsConsumer, bus.DecodedResult(s.handleResult)); err != nil {
		return err
	}
	var wg sync.WaitGroup
	s.mu.Lock()
	s.closing = false
	s.mu.Unlock()
	// a triggered run belongs to the service's context, not to the message's
	if err := router.Handle("orchestration-triggers", TriggersConsumer, s.watchedChanges(bus.Decoded(func(mctx context.Context, meta envelope.Meta, c *envelope.Change) error {
		return s.handleChange(mctx, ctx, &wg, meta, c)
	}))); err != nil {
		return err
	}
	if err := s.resume(ctx, &wg); err != nil {
		s.log.Error("resume runs", "err", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.cronLoop(tctx, ctx, &wg)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.followChangeClasses(tctx, ctx, &wg)
	}()
	svc, err := bus.AddService(ctx, s.deps.NC, bus.ServiceConfig{Name: Service, Version: version.Semver(),
		Description: "workflows: definitions, runs, approvals", Endpoints: s.endpoints(ctx, &wg), Logger: s.log})
	if err != nil {
		return err
	}
	defer func() { _ = svc.Stop() }()
	err = router.Run(ctx)
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// resume takes every unfinished run — its snapshot in KV plus the events of its history
// after it — and carries it on where it was: attempts whose probe was sent keep waiting for
// their result (they are never sent again); an attempt recorded but not sent is sent then,
// with the same probe id.
func (s *service) resume(ctx context.Context, wg *sync.WaitGroup) error {
	keys, err := s.kvRuns.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil
		}
		return err
	}
	var ids []string
	for k := range keys.Keys() {
		ids = append(ids, k)
	}
	n := 0
	for _, k := range ids {
		r, err := s.load(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			s.log.Warn("resume: a snapshot without history is no run; removed", "run", k, "err", err)
			_ = s.kvRuns.Delete(ctx, k)
			continue
		}
		if err != nil {
			s.log.Error("resume run: cannot read it", "run", k, "err", err)
			continue
		}
		if r.Done() {
			if e, err := s.kvRuns.Get(ctx, k); err == nil && !bytes.Contains(e.Value(), []byte(`"state":"`+r.State+`"`)) {
				_ = s.writeSnapshot(ctx, r) // it ended after its last snapshot
			}
			continue
		}
		d, err := s.definition(ctx, r.Workflow, r.Version)
		if err != nil {
			s.log.Error("resume run: its definition is gone", "run", r.ID, "workflow", r.Workflow, "version", r.Version, "err", err)
			continue
		}
		wf, err := validate(r.Workflow, d.Workflow)
		if err != nil {
			s.log.Error("resume run: its definition no longer validates", "run", r.ID, "err", err)
			continue
		}
		a := s.newActive(r, wf)
		a.seq, a.persisted = r.Seq, persistedOf(r)
		s.start(ctx, wg, a)
		n++
	}
	if n > 0 {
		s.log.Info("runs resumed", "runs", n)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func (s *service) newActive(r *api.Run, wf *workflow) *active {
	return &active{run: r, wf: wf, kick: make(chan struct{}, 1), inflight: map[string]bool{}, queued: map[string]bool{},
		children: map[string]string{}, watching: map[string]bool{}}
}

// start puts a run in memory and starts its goroutine.
func (s *service) start(ctx context.Context, wg *sync.WaitGroup, a *active) *active {
	s.mu.Lock()
	if s.closing {
		// serve awaits the runs' goroutines: none may start now (the run is on record and
		// resumes with the next term)
		s.mu.Unlock()
		return a
	}
	s.runs[a.run.ID] = a
	wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer wg.Done()
		s.drive(ctx, wg, a)
	}()
	return a
}

func (s *service) lookup(id string) *active {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[id]
}

// drive advances one run until it is finished or ctx ends, sleeping until its next
// deadline or until something wakes it.
func (s *service) drive(ctx context.Context, wg *sync.WaitGroup, a *active) {
	defer func() {
		// results still waiting for a save are redelivered to whoever advances the run next
		a.mu.Lock()
		for _, w := range a.waiters {
			w <- errJournalStopped
		}
		a.waiters = nil
		a.mu.Unlock()
	}()
	for {
		a.mu.Lock()
		next := s.advance(ctx, wg, a)
		if len(a.waiters) > 0 {
			// advance saved what it did; this save is a no-op unless that one failed
			err := s.save(ctx, a)
			for _, w := range a.waiters {
				w <- err
			}
			a.waiters = nil
		}
		done := a.run.Done() || a.fenced
		orphans := s.orphans(a)
		var ended *api.Run
		if a.run.Done() && a.run.Parent != nil {
			cp := snapshot(a.run)
			ended = &cp
		}
		a.mu.Unlock()
		for _, child := range orphans {
			// the attempt that waited for it ended otherwise: the child goes too
			if _, err := s.cancel(ctx, child); err != nil {
				s.log.Info("cancel a sub-workflow run", "run", a.run.ID, "child", child, "err", err)
			}
		}
		if ended != nil {
			s.childDone(ctx, ended)
		}
		if done {
			s.mu.Lock()
			if s.runs[a.run.ID] == a {
				delete(s.runs, a.run.ID)
			}
			s.mu.Unlock()
			return
		}
		var timer clock.Timer
		var fire <-chan time.Time
		if !next.IsZero() {
			d := next.Sub(s.now())
			if d <= 0 {
				continue // due already (a clock moved while the run advanced)
			}
			timer = s.clock.NewTimer(d)
			fire = timer.C()
			if s.armed != nil {
				s.armed(a.run.ID, next)
			}
		}
		select {
		case <-ctx.Done():
		case <-a.kick:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}
