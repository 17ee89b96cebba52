// Package discovery scans a site's ranges through its bridges, classifies what answers,
// explores it, sends what it identified to the CMDB and counts what the CMDB made of it: a
// run is a pipeline of stages (scan → classify → explore → identify → ingest, stage.go)
// over a state that lives in KV, so it survives restarts.
package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.opentelemetry.io/otel/trace"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/lease"
	"github.com/outpost-dev/outpost/libs/version"
)

// Service is the name on the bus: svc.discovery.<op>, result.discovery.>, dlq.discovery.
const Service = "discovery"

// ResultsConsumer is the durable consumer of the service's probe results; ReceiptsConsumer
// of the CMDB's receipts for the payloads it sent.
const (
	ResultsConsumer  = "discovery-results"
	ReceiptsConsumer = "discovery-receipts"
)

// Deps are what Run needs from its host process.
type Deps struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Logger *slog.Logger
	// CurveKey is the hub's curve (xkey) key pair: credentials are sealed with it to the
	// curve keys of the site's approved bridges. Without it probes carry no credentials.
	CurveKey nkeys.KeyPair
	Tracer   trace.TracerProvider
	// Clock drives ticks, deadlines, leases and timestamps; default the real clock. Tests
	// give a clock.Fake and move time by hand.
	Clock clock.Clock
}

// Consumers are the durable consumers discovery needs; the hub adds them to its topology.
func Consumers() []bus.ConsumerSpec {
	return []bus.ConsumerSpec{{
		Stream: bus.StreamResults, Name: ResultsConsumer, Filters: []string{"result.discovery.>"},
		AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 2000,
		Description: "probe results of discovery runs",
	}, {
		Stream: bus.StreamChanges, Name: ReceiptsConsumer, Filters: []string{bus.IngestedSubject(SourceName)},
		AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 2000,
		Description: "the CMDB's receipts for discovery payloads: CIs created, updated, unchanged per run",
	}}
}

type service struct {
	cfg      Config
	deps     Deps
	clock    clock.Clock
	pipeline *pipeline
	log      *slog.Logger
	pub      *bus.Publisher
	rules    *Classifiers
	creds    *credStore

	kvRuns, kvHosts, kvAff, kvSched, kvLeases, kvHostKeys, kvPending jetstream.KeyValue
	// runsW, hostsW and pendingW write run state fenced by the active lease: a replica
	// that lost it (or was frozen past it) cannot overwrite what the next one wrote. With
	// ShareRuns each run has writers of its own, fenced by its run lease (owner.go).
	runsW, hostsW, pendingW *lease.Store

	mu   sync.Mutex
	runs map[string]*runState // active runs owned by this process

	// active is this replica's hold on ActiveLeaseKey (active.go, libs/lease): with
	// ShareRuns it only decides who runs schedules and retention.
	active *lease.Active

	// own spreads runs over the active replicas (ShareRuns, owner.go).
	own *owner

	bridgesMu sync.Mutex
	bridges   map[string]bridgeCache

	// replays are the replay runs this replica drives (replay.go), by run id.
	replays sync.Map
	// ledgerFailed counts probes published without their ledger entry (not replayable).
	ledgerFailed atomic.Int64
}

// runState is an active run in memory (KV is written through): the state the pipeline's
// stages update. It holds no connection and reads no clock; times in it are turns' times.
type runState struct {
	mu        sync.Mutex
	run       *RunRecord
	hosts     map[string]*Host
	dirty     bool
	lastSaved time.Time
	// resumed: loaded from KV after a restart; probes pending then may never have been
	// published (or their results were lost with an unsaved run record): send them again.
	resumed bool
	// creds caches the run's decrypted credentials by type for a few seconds: a sweep of a
	// /20 seals thousands of probes.
	creds   map[string][]clearCredential
	credsAt time.Time
	// payloads indexes host payload ids by address, for the CMDB's receipts.
	payloads map[string]string
	// saved is what KVPending holds of the run's pending probes, by group (pending.go).
	saved map[string]map[string]pendingSig
	// unsent are probes on record as pending that could not be published yet (a failed
	// write ahead of them, or a failed publish): sent on the next turn, same ids.
	unsent []*envelope.Probe
	// startTries counts the turns whose start of the run failed transiently (reading the
	// site or its bridges); startRetry is when the next may try (stage_scan.go).
	startTries int
	startRetry time.Time
	// unsavedHosts are hosts changed by turns whose writes failed (pending or host): written
	// by the next turn, after its pending probes (pipeline.go, advance).
	unsavedHosts map[string]*Host
	// receiptsSince is when the run had nothing left but the CMDB's receipts to wait for.
	receiptsSince time.Time
	// dry: a dry replay run (replay.go), which sends no payload and so awaits no receipt.
	dry bool
	// lease fences the run's writes and publishes, through runsW, hostsW and pendingW: the
	// service's active lease, or with ShareRuns the run's own (owner.go).
	lease                   *lease.Active
	runsW, hostsW, pendingW *lease.Store
	// held ends when the run's own lease is lost or dropped (ShareRuns; nil otherwise).
	held context.Context
}

// fence is nil while this replica may write the run's state and publish its work.
func (rs *runState) fence() error {
	_, err := rs.lease.Token()
	return err
}

// bind makes the run's writes go through a lease: the active one, or the run's own.
func (s *service) bind(rs *runState, l *lease.Active) {
	rs.lease = l
	if l == s.active {
		rs.runsW, rs.hostsW, rs.pendingW = s.runsW, s.hostsW, s.pendingW
		return
	}
	rs.runsW, rs.hostsW, rs.pendingW = l.Store(s.kvRuns), l.Store(s.kvHosts), l.Store(s.kvPending)
}

type bridgeCache struct {
	keys     []string
	scanners int
	at       time.Time
}

func (s *service) now() time.Time { return s.clock.Now().UTC() }

// Run serves discovery until ctx ends.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("discovery config: %w", err)
	}
	if deps.NC == nil || deps.JS == nil {
		return errors.New("discovery: NATS connection and JetStream are required")
	}
	s, err := newService(ctx, cfg, deps)
	if err != nil {
		return err
	}
	if cfg.ShareRuns {
		return s.serve(ctx)
	}
	return s.serveWhenActive(ctx)
}

func newService(ctx context.Context, cfg Config, deps Deps) (*service, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", Service)
	if cfg.Replica == "" {
		cfg.Replica = envelope.NewID()
	}
	rules, err := NewClassifiers(cfg.ClassifiersDir)
	if err != nil {
		return nil, fmt.Errorf("discovery classifiers: %w", err)
	}
	s := &service{cfg: cfg, deps: deps, clock: clock.Or(deps.Clock), log: log, rules: rules, runs: map[string]*runState{}, bridges: map[string]bridgeCache{},
		pub: bus.NewPublisher(deps.JS, envelope.ServiceSource(Service), deps.Tracer)}
	s.pipeline = newPipeline(cfg, rules, s, s, s)
	s.pipeline.log = s.log
	// buckets are made (or brought to the table's limits) from the stores table; on a
	// cluster they are read through their stream leaders (leaderkv.go)
	kv := func(spec jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
		b, err := deps.JS.CreateOrUpdateKeyValue(ctx, spec)
		if err != nil {
			return nil, fmt.Errorf("kv %s: %w", spec.Bucket, err)
		}
		return leaderReads(ctx, deps.JS, deps.NC, b)
	}
	var errs []error
	pick := func(b jetstream.KeyValue, err error) jetstream.KeyValue { errs = append(errs, err); return b }
	s.kvRuns = pick(kv(bus.KV(bus.KVRuns)))
	s.kvLeases = pick(kv(bus.KV(bus.KVLeases)))
	s.kvHosts = pick(kv(bus.KV(KVHosts)))
	s.kvPending = pick(kv(bus.KV(KVPending)))
	s.kvAff = pick(kv(bus.KV(KVAffinity)))
	s.kvSched = pick(kv(bus.KV(KVSchedules)))
	s.kvHostKeys = pick(kv(bus.KV(KVHostKeys)))
	errs = append(errs, ensureLedger(ctx, deps.JS, LedgerMaxAge))
	credKV := pick(kv(bus.KV(KVCredentials)))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.active = lease.New(lease.Config{JS: deps.JS, KV: s.kvLeases, Key: ActiveLeaseKey, Holder: cfg.Replica, TTL: cfg.ActiveLease,
		Clock: s.clock, Logger: s.log, Name: Service})
	s.runsW, s.hostsW, s.pendingW = s.active.Store(s.kvRuns), s.active.Store(s.kvHosts), s.active.Store(s.kvPending)
	if cfg.ShareRuns {
		s.own = newOwner(s)
	}
	key, err := loadKey(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if s.creds, err = newCredStore(credKV, key, s.now); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *service) serve(ctx context.Context) error {
	for _, c := range Consumers() {
		if _, err := s.deps.JS.CreateOrUpdateConsumer(ctx, c.Stream, c.Config()); err != nil {
			return fmt.Errorf("discovery consumer %s: %w", c.Name, err)
		}
	}
	router, err := bus.NewRouter(s.deps.NC, s.deps.JS, bus.RouterConfig{Service: Service,
		Topology: bus.Topology{Consumers: Consumers()}, MaxInFlight: 64, Logger: s.log, Tracer: s.deps.Tracer})
	if err != nil {
		return err
	}
	if err := router.Handle("discovery-results", ResultsConsumer, bus.DecodedResult(s.handleResult)); err != nil {
		return err
	}
	if err := router.Handle("discovery-receipts", ReceiptsConsumer, bus.Decoded(s.handleReceipt)); err != nil {
		return err
	}
	svc, err := bus.AddService(ctx, s.deps.NC, bus.ServiceConfig{Name: Service, Version: serviceVersion(),
		Description: "discovery runs, schedules and credentials", Endpoints: s.endpoints(), Logger: s.log, Tracer: s.deps.Tracer})
	if err != nil {
		return err
	}
	defer func() { _ = svc.Stop() }()
	var wg sync.WaitGroup
	if s.own != nil {
		// every replica serves; runs are claimed by owner.go, schedules and retention stay
		// with the holder of the active lease
		if err := s.own.listen(); err != nil {
			return err
		}
		wg.Add(3)
		go func() { defer wg.Done(); s.tickLoop(ctx) }()
		go func() { defer wg.Done(); s.own.run(ctx) }()
		go func() {
			defer wg.Done()
			_ = s.active.Serve(ctx, func(actx context.Context) error {
				var lw sync.WaitGroup
				lw.Add(2)
				go func() { defer lw.Done(); s.scheduleLoop(actx) }()
				go func() { defer lw.Done(); s.pruneLoop(actx) }()
				lw.Wait()
				return nil
			}, nil)
		}()
	} else {
		if err := s.resume(ctx); err != nil {
			s.log.Error("resume runs", "err", err)
		}
		wg.Add(3)
		go func() { defer wg.Done(); s.tickLoop(ctx) }()
		go func() { defer wg.Done(); s.scheduleLoop(ctx) }()
		go func() { defer wg.Done(); s.pruneLoop(ctx) }()
	}
	err = router.Run(ctx)
	wg.Wait()
	if s.own != nil {
		s.own.quiesce()
	}
	s.saveAll(context.WithoutCancel(ctx))
	if s.own != nil {
		s.own.stop(context.WithoutCancel(ctx))
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func serviceVersion() string { return version.Semver() }

// resume loads every run that is not finished: its hosts come back from KV and the tick
// carries on where it stopped (results not yet acked are redelivered by the consumer).
func (s *service) resume(ctx context.Context) error {
	keys, err := s.kvRuns.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil
		}
		return err
	}
	for k := range keys.Keys() {
		if _, err := s.loadRun(ctx, k); err != nil {
			s.log.Warn("resume run", "run", k, "err", err)
		}
	}
	return nil
}

// loadRun returns the in-memory state of an active run, loading it from KV when needed.
// Finished and unknown runs return nil.
//
// With ShareRuns only the runs this replica owns are loaded here: the others are another
// replica's (or nobody's yet), owner.go takes them.
func (s *service) loadRun(ctx context.Context, id string) (*runState, error) {
	if s.own != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.runs[id], nil
	}
	return s.load(ctx, id, s.active, nil)
}

// load reads a run from KV into memory, its writes fenced by l (held: the run's own lease's
// holding, nil for the active lease).
func (s *service) load(ctx context.Context, id string, l *lease.Active, held context.Context) (*runState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rs, ok := s.runs[id]; ok {
		return rs, nil
	}
	e, err := s.kvRuns.Get(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil
		}
		return nil, err
	}
	var r RunRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil || r.Site == "" {
		return nil, nil // not a run record (another service's key)
	}
	if terminalState(r.State) {
		return nil, nil
	}
	if r.ReplayOf != "" && s.replayOf(id) == nil {
		// a replay run's answers lived in the replica that started it: replay again
		s.log.Warn("replay run interrupted: its replica stopped; start the replay again", "run", id, "of", r.ReplayOf)
		return nil, nil
	}
	rs := &runState{run: &r, hosts: map[string]*Host{}, resumed: r.State != StateQueued, held: held}
	s.bind(rs, l)
	rs.runsW.Seen(id, e.Revision())
	r.Pending = map[string]*pendingProbe{}
	if err := s.loadPending(ctx, rs); err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, fmt.Errorf("run %s: pending probes: %w", id, err)
	}
	maps.Copy(r.Pending, r.OldPending)
	r.OldPending = nil
	if r.State == StateQueued {
		// groups written ahead of a start whose record never said "scanning": none of those
		// probes is awaited (the run starts over), so they are not kept either
		r.Pending = map[string]*pendingProbe{}
	}
	hk, err := s.kvHosts.ListKeysFiltered(ctx, hostKeyPrefix(id)+">")
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, fmt.Errorf("run %s: hosts: %w", id, err)
	}
	if err == nil {
		for k := range hk.Keys() {
			he, err := s.kvHosts.Get(ctx, k)
			if err != nil {
				continue
			}
			var h Host
			if json.Unmarshal(he.Value(), &h) == nil {
				rs.hostsW.Seen(k, he.Revision())
				rs.hosts[h.IP] = &h
				for pid := range h.Done { // applied before the crash, pending not saved yet
					delete(r.Pending, pid)
				}
			}
		}
	}
	// host records are written before each ack, the run record only every second: the
	// counters that hosts can tell are recomputed from them
	c := &r.Counters
	c.Alive, c.Classified, c.Unclassified = len(rs.hosts), 0, 0
	c.Ingested, c.CIsCreated, c.CIsUpdated, c.CIsUnchanged = 0, 0, 0, 0
	for _, h := range rs.hosts {
		switch {
		case h.Class != "":
			c.Classified++
		case h.Stage == stageDone:
			c.Unclassified++
		}
		if in := h.Ingested; in != nil {
			c.Ingested++
			c.CIsCreated += in.Created
			c.CIsUpdated += in.Updated
			c.CIsUnchanged += in.Unchanged
		}
	}
	s.log.Info("run resumed", "run", id, "state", r.State, "hosts", len(rs.hosts), "pending", len(r.Pending))
	s.runs[id] = rs
	return rs, nil
}

func hostKeyPrefix(run string) string { return run + "." }

func hostKey(run, ip string) string { return hostKeyPrefix(run) + keySafe(ip) }

// saveRun writes the run record (caller holds rs.mu), fenced by the active lease: a replica
// that lost it writes nothing.
func (s *service) saveRun(ctx context.Context, rs *runState) error {
	rs.run.Updated = s.now()
	err := rs.runsW.Put(ctx, rs.run.ID, func(token uint64) ([]byte, error) {
		rs.run.Fence = token
		return json.Marshal(rs.run)
	})
	if err != nil {
		s.log.Warn("save run", "run", rs.run.ID, "err", err)
		return err
	}
	rs.dirty = false
	rs.lastSaved = s.now()
	return nil
}

// saveHost writes a host record of rs (caller holds rs.mu), fenced like saveRun.
func (s *service) saveHost(ctx context.Context, rs *runState, h *Host) error {
	return rs.hostsW.Put(ctx, hostKey(h.Run, h.IP), func(token uint64) ([]byte, error) {
		h.Fence = token
		return json.Marshal(h)
	})
}

func (s *service) saveAll(ctx context.Context) {
	s.mu.Lock()
	states := make([]*runState, 0, len(s.runs))
	for _, rs := range s.runs {
		states = append(states, rs)
	}
	s.mu.Unlock()
	for _, rs := range states {
		rs.mu.Lock()
		_ = s.savePending(ctx, rs, true)
		_ = s.saveRun(ctx, rs)
		rs.mu.Unlock()
	}
}

func (s *service) tickLoop(ctx context.Context) {
	t := s.clock.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		s.mu.Lock()
		states := make([]*runState, 0, len(s.runs))
		for _, rs := range s.runs {
			states = append(states, rs)
		}
		s.mu.Unlock()
		for _, rs := range states {
			s.advance(ctx, rs)
		}
	}
}
