// Package cmdb is the CMDB service on the bus (DESIGN.md §3): it reconciles the CI payloads
// producers publish on cmdb.ingest.<partition> into the store, announces every created,
// updated or stale CI on cmdb.changed.<class>, answers queries on svc.cmdb.<op>, and marks
// CIs no source has seen for a while as stale.
//
//	CMDB stream ──cmdb-p<N> consumers──► batcher ─► ire.Engine.IngestBatch ──► store + outbox
//	                  │ invalid payload                 drainer: outbox ──► CHANGES (cmdb.changed.<class>, cmdb.ingested.<source>)
//	                  └──► DLQ (dlq.cmdb), with the fields at fault
//	svc.cmdb.{ls,get,history,rel,graph,counts,conflicts,classes,ingest} ──► store / engine
//
// One durable consumer per partition, with PartitionInFlight messages in flight across every
// replica; what arrives together is reconciled in one transaction (batcher), one payload
// after the other. Replicas share partitions and queries; the store keeps identity correct
// even when two transactions carry the same device. What an ingest announces (change
// events, its receipt) is written in its transaction and published after the commit by the
// drainer (transactional outbox).
package cmdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/version"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// Name is the service's name: svc.cmdb.<op>, dlq.cmdb, ce-source /services/cmdb.
const Name = "cmdb"

// Config of the CMDB service. Zero values take the defaults of DefaultConfig.
type Config struct {
	// DSN names the store: sqlite://PATH (embedded default, one file) or postgres://… (for
	// several replicas).
	DSN string
	// Partitions is how many cmdb.ingest.<p> subjects (and consumers) there are. Producers
	// must partition with the same count (IngestSubject). Changing it while payloads are
	// queued strands those on partitions that no longer exist.
	Partitions int
	// Precedence ranks sources per attribute, highest first: "manual > sccm > discovery > import".
	Precedence string
	// StaleAfter: a CI no source has seen for this long is marked stale (never deleted).
	StaleAfter time.Duration
	// StaleEvery is how often replicas look for stale CIs (one of them does, by lease).
	StaleEvery time.Duration
	// ClassesDir, when set, extends or replaces the embedded class model (classes.LoadDir).
	ClassesDir string
	// MaxBatch bounds the payloads ingested in one transaction (group commit, default
	// DefaultMaxBatch). 1 ingests every payload alone with one payload per partition in
	// flight, as before batching: for comparison, or to debug one payload at a time.
	MaxBatch int
	// KeepReceipts is how long the receipt of an ingested payload is kept, so that the same
	// payload delivered again (a producer resuming a run) is answered with what it did. At
	// least as long as producers may resend: the importer keeps its staged rows 7 days.
	KeepReceipts time.Duration
	// Version is the service version NATS micro reports (semver).
	Version string
}

// Defaults.
const (
	DefaultPartitions   = 8
	DefaultPrecedence   = "manual > sccm > discovery > import"
	DefaultStaleAfter   = 30 * 24 * time.Hour
	DefaultStaleEvery   = time.Hour
	DefaultKeepReceipts = 7 * 24 * time.Hour
	DefaultMaxBatch     = 512
	// PartitionInFlight is how many payloads of one partition are handled at once: enough
	// for a batch to fill while the previous one commits (an import sends one row per
	// payload, so throughput is the batch size over the commit time).
	PartitionInFlight = 64
	// MaxPartitions bounds the consumers a deployment creates.
	MaxPartitions = 256
)

// DefaultConfig is the CMDB of `outpost up`, on an SQLite file in the working directory.
func DefaultConfig() Config {
	return Config{
		DSN:          "sqlite://cmdb.db",
		Partitions:   DefaultPartitions,
		Precedence:   DefaultPrecedence,
		StaleAfter:   DefaultStaleAfter,
		StaleEvery:   DefaultStaleEvery,
		KeepReceipts: DefaultKeepReceipts,
		Version:      version.Semver(),
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Partitions == 0 {
		c.Partitions = d.Partitions
	}
	if strings.TrimSpace(c.Precedence) == "" {
		c.Precedence = d.Precedence
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = d.StaleAfter
	}
	if c.StaleEvery == 0 {
		c.StaleEvery = d.StaleEvery
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.KeepReceipts == 0 {
		c.KeepReceipts = d.KeepReceipts
	}
	if c.Version == "" {
		c.Version = d.Version
	}
	return c
}

// semver is the form NATS micro accepts for a service version.
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// Validate reports every problem at once. Zero values are fine: they mean the default.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.DSN == "":
		errs = append(errs, errors.New("cmdb DSN is empty: give sqlite://PATH or postgres://USER@HOST/DB"))
	case strings.HasPrefix(c.DSN, "sqlite://"):
		if p := strings.TrimPrefix(c.DSN, "sqlite://"); p == "" || p == ":memory:" {
			errs = append(errs, fmt.Errorf("cmdb DSN %q: sqlite needs a file path, e.g. sqlite://data/cmdb.db", c.DSN))
		}
	case strings.HasPrefix(c.DSN, "postgres://"), strings.HasPrefix(c.DSN, "postgresql://"):
	default:
		scheme, _, _ := strings.Cut(c.DSN, "://")
		errs = append(errs, fmt.Errorf("cmdb DSN scheme %q: want sqlite://PATH or postgres://…", scheme))
	}
	if c.Partitions < 0 || c.Partitions > MaxPartitions {
		errs = append(errs, fmt.Errorf("cmdb partitions %d: want 1 to %d (default %d)", c.Partitions, MaxPartitions, DefaultPartitions))
	}
	if strings.TrimSpace(c.Precedence) != "" {
		if _, err := ire.ParsePrecedence(c.Precedence); err != nil {
			errs = append(errs, fmt.Errorf("cmdb precedence: %w (want e.g. %q)", err, DefaultPrecedence))
		}
	}
	if c.StaleAfter < 0 {
		errs = append(errs, fmt.Errorf("cmdb stale-after %s: must be positive", c.StaleAfter))
	}
	if c.StaleEvery < 0 {
		errs = append(errs, fmt.Errorf("cmdb stale check interval %s: must be positive", c.StaleEvery))
	}
	if c.MaxBatch < 0 || c.MaxBatch > 10_000 {
		errs = append(errs, fmt.Errorf("cmdb max batch %d: want 1 to 10000 payloads per transaction (default %d)", c.MaxBatch, DefaultMaxBatch))
	}
	if c.KeepReceipts < 0 {
		errs = append(errs, fmt.Errorf("cmdb keep-receipts %s: must be positive (default %s)", c.KeepReceipts, DefaultKeepReceipts))
	}
	if c.ClassesDir != "" {
		if fi, err := os.Stat(c.ClassesDir); err != nil {
			errs = append(errs, fmt.Errorf("cmdb classes dir: %w", err))
		} else if !fi.IsDir() {
			errs = append(errs, fmt.Errorf("cmdb classes dir %s: not a directory", c.ClassesDir))
		} else if _, err := classes.LoadDir(c.ClassesDir); err != nil {
			errs = append(errs, fmt.Errorf("cmdb classes dir %s: %w", c.ClassesDir, err))
		}
	}
	if c.Version != "" && !semver.MatchString(c.Version) {
		errs = append(errs, fmt.Errorf("cmdb version %q: want semver such as 1.2.3 or 0.0.0-dev", c.Version))
	}
	return errors.Join(errs...)
}

// Deps are what the service talks to.
type Deps struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Logger *slog.Logger
	Tracer trace.TracerProvider // may be nil
	// Ready, when set, is called once the consumers and endpoints are serving.
	Ready func()
	// Clock times stale marking, change events without an observed time, receipts and their
	// pruning; default the real clock.
	Clock clock.Clock
}

// ConsumerName is the durable consumer of one partition: cmdb-p<partition>.
func ConsumerName(partition int) string { return fmt.Sprintf("cmdb-p%d", partition) }

// Consumers are the durable consumers of the CMDB stream, one per partition, for the hub's
// topology. MaxAckPending PartitionInFlight across replicas: the payloads of a partition
// are handed to the batcher together and reconciled one after the other in one transaction
// (SQLite: one writer), or in a few concurrent transactions (PostgreSQL) where the store
// keeps identity correct (unique identifiers, row locks, retries) and precedence by
// observed time keeps the newest observation whatever the order.
func Consumers(partitions int) []bus.ConsumerSpec {
	if partitions <= 0 {
		partitions = DefaultPartitions
	}
	out := make([]bus.ConsumerSpec, partitions)
	for p := range partitions {
		out[p] = bus.ConsumerSpec{
			Stream:        bus.StreamCMDB,
			Name:          ConsumerName(p),
			Filters:       []string{bus.CMDBIngestSubject(p)},
			MaxAckPending: PartitionInFlight,
			Description:   fmt.Sprintf("CMDB ingest, partition %d of %d", p, partitions),
		}
	}
	return out
}

// service is one running replica.
type service struct {
	cfg     Config
	st      store.Store
	eng     *ire.Engine
	batch   *batcher // the partitions' payloads, ingested together when they arrive together
	model   *classes.Model
	changes *changes
	drain   *drainer           // publishes what ingests wrote to the outbox
	kv      jetstream.KeyValue // leases; nil when the bucket is unavailable
	log     *slog.Logger
	holder  string // this replica's name in leases
	clock   clock.Clock
}

// Run serves until ctx ends: it opens (and migrates) the store, makes sure the bus has what
// the service needs, consumes every partition, serves svc.cmdb.*, and marks stale CIs.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	cfg = cfg.withDefaults()
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if deps.NC == nil || deps.JS == nil {
		errs = append(errs, errors.New("cmdb: NC and JS are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", Name)

	model, err := classes.Default()
	if cfg.ClassesDir != "" {
		model, err = classes.LoadDir(cfg.ClassesDir)
	}
	if err != nil {
		return fmt.Errorf("cmdb: class model: %w", err)
	}
	prec, err := ire.ParsePrecedence(cfg.Precedence)
	if err != nil {
		return fmt.Errorf("cmdb: %w", err)
	}
	st, err := store.Open(ctx, cfg.DSN, store.Options{})
	if err != nil {
		return fmt.Errorf("cmdb: %w", err)
	}
	defer st.Close()
	clk := clock.Or(deps.Clock)
	eng, err := ire.New(st, model, ire.Options{Precedence: prec, Logger: log, Now: clk.Now})
	if err != nil {
		return err
	}

	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = ensureBus(pctx, deps.JS, cfg.Partitions)
	cancel()
	if err != nil {
		return fmt.Errorf("cmdb: provision the bus: %w", err)
	}
	s := &service{cfg: cfg, st: st, eng: eng, model: model, log: log, clock: clk,
		changes: newChanges(deps.JS, deps.Tracer, log, clk), holder: holderName(deps.NC),
		drain: newDrainer(st, deps.JS, cfg.KeepReceipts, log, clk)}
	if s.kv, err = deps.JS.KeyValue(ctx, bus.KVLeases); err != nil {
		log.Warn("leases bucket unavailable: stale marking is off until restart", "err", err)
		s.kv = nil
	}

	topo := bus.Topology{Consumers: Consumers(cfg.Partitions)}
	inFlight := PartitionInFlight
	if cfg.MaxBatch == 1 {
		inFlight = 1 // per-payload mode: one at a time per partition
	}
	router, err := bus.NewRouter(deps.NC, deps.JS, bus.RouterConfig{Service: Name, Topology: topo,
		MaxInFlight: inFlight, Logger: deps.Logger, Tracer: deps.Tracer})
	if err != nil {
		return fmt.Errorf("cmdb: %w", err)
	}
	for _, c := range topo.Consumers {
		if err := router.Handle(c.Name, c.Name, s.handlePayload); err != nil {
			return fmt.Errorf("cmdb: %w", err)
		}
	}
	svc, err := bus.AddService(ctx, deps.NC, bus.ServiceConfig{Name: Name, Version: cfg.Version,
		Description: "configuration items: query, ingest, classes", Endpoints: s.endpoints(), Logger: log})
	if err != nil {
		return fmt.Errorf("cmdb: %w", err)
	}
	// Stop answering before the store closes (deferred above, so it runs after this).
	defer func() { _ = svc.Stop() }()

	// Deferred in this order so that on return the stale loop is told to stop, then waited for.
	var wg sync.WaitGroup
	defer wg.Wait()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	s.batch = newBatcher(rctx, eng, batchWorkers(cfg.DSN), cfg.MaxBatch)
	// Its workers end with rctx; an ingest in flight finishes first (the store is still open).
	defer func() { stop(); s.batch.wait() }()
	routerErr := make(chan error, 1)
	go func() { routerErr <- router.Run(rctx) }()
	select {
	case <-router.Running():
	case err := <-routerErr:
		return fmt.Errorf("cmdb: consumers: %w", err)
	case <-ctx.Done():
		stop()
		return <-routerErr
	}
	wg.Add(1)
	go func() { defer wg.Done(); s.staleLoop(rctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.drain.run(rctx) }()
	kind := strings.SplitN(cfg.DSN, "://", 2)[0]
	attrs := []any{"partitions", cfg.Partitions, "store", kind}
	if kind == "sqlite" {
		attrs = append(attrs, "engine", store.SQLiteEngine()) // C or pure Go: what the build has
	}
	log.Info("cmdb serving", attrs...)
	if deps.Ready != nil {
		deps.Ready()
	}
	select {
	case <-ctx.Done():
		stop()
		return <-routerErr
	case err := <-routerErr:
		if ctx.Err() != nil {
			return err
		}
		if err == nil {
			err = errors.New("router exited")
		}
		return fmt.Errorf("cmdb: consumers stopped: %w", err)
	}
}

// onPayload ingests one payload from the CMDB stream, in one transaction with whatever other
// partitions hand in meanwhile (batcher). A payload the engine rejects can never succeed: it
// goes to the DLQ at once, with the fields at fault in its reason, and never joins a batch.
// Anything else (the store is down, a transaction kept conflicting) is retried by redelivery.
//
// Its change events and receipt commit with it (outbox) and are published by the drainer:
// the payload is acked once committed.
func (s *service) onPayload(ctx context.Context, meta envelope.Meta, p *envelope.CIPayload, digest string) error {
	prep, err := s.eng.Prepare(*p)
	if err != nil {
		return bus.Permanent(err) // invalid: alone, before any batch
	}
	s.changes.announce(prep, meta, *p, digest)
	if _, err := s.batch.ingest(ctx, prep); err != nil {
		return err
	}
	s.drain.notify()
	return nil
}

// handlePayload decodes a message of the CMDB stream as bus.Decoded does (decodePayload) and hands it to
// onPayload with the digest of its body as it came: the bytes are what a redelivery or a
// producer's resend repeats, and hashing them costs a fraction of encoding the decoded
// payload again (which was 2 % of the CPU and 6 % of the allocations of an ingest).
func (s *service) handlePayload(msg *message.Message) error {
	meta, p, err := decodePayload(msg.Metadata.Get, msg.Payload)
	if err != nil {
		return err
	}
	return s.onPayload(msg.Context(), meta, p, bodyDigest(msg.Payload))
}

// batchWorkers is how many ingest transactions run at once: SQLite has one writer, so more
// would only queue on it; PostgreSQL runs a few side by side.
func batchWorkers(dsn string) int {
	if strings.HasPrefix(dsn, "sqlite://") {
		return 1
	}
	return 4
}

// ensureBus creates the consumers, and the streams and bucket the service needs when they
// are missing (a standalone replica on a bare server). Existing streams are left alone: the
// hub (or an operator) owns their limits and replicas.
func ensureBus(ctx context.Context, js jetstream.JetStream, partitions int) error {
	def := bus.DefaultTopology(bus.DefaultLimits())
	t := bus.Topology{Consumers: Consumers(partitions)}
	for _, sc := range def.Streams {
		switch sc.Name {
		case bus.StreamCMDB, bus.StreamChanges, bus.StreamDLQ:
		default:
			continue
		}
		if _, err := js.Stream(ctx, sc.Name); errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Streams = append(t.Streams, sc)
		} else if err != nil {
			return fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	for _, kv := range def.KV {
		if kv.Bucket != bus.KVLeases {
			continue
		}
		if _, err := js.KeyValue(ctx, kv.Bucket); errors.Is(err, jetstream.ErrBucketNotFound) {
			t.KV = append(t.KV, kv)
		} else if err != nil {
			return fmt.Errorf("kv %s: %w", kv.Bucket, err)
		}
	}
	return bus.Provision(ctx, js, t)
}

// holderName names this replica in leases, for operators reading the bucket.
func holderName(nc *nats.Conn) string {
	host, _ := os.Hostname()
	id := ""
	if nc != nil {
		if cid, err := nc.GetClientID(); err == nil {
			id = fmt.Sprintf("/%d", cid)
		}
	}
	return fmt.Sprintf("%s/%d%s", host, os.Getpid(), id)
}
