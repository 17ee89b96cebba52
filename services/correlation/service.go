// Package correlation turns raw events (event.<site>.<source> on EVENTS: the bridges'
// syslog, trap and webhook collectors, hub services, the API) into deduplicated alerts:
// normalized, keyed, folded into an alert lifecycle (open, acknowledged, closed by a clear
// event, a timeout or a user), bound to a CMDB CI and matched against silences. Alerts and
// silences live in KV; the events stay in EVENTS.
//
// Every replica routes events (router.go) into partitions by group key; the replica that
// holds a partition's lease (owner.go) folds its events into alerts in order, times its
// groups in one heap and notifies them (grouping.go, notify.go). Every replica serves the
// API. See docs/architecture.md, "Correlation".
package correlation

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/trace"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/version"
	"github.com/outpost-dev/outpost/services/correlation/poll"
)

// Service is the bus name of the service.
const Service = api.Service

// EventsConsumer is the durable consumer of EVENTS that the active replica reads.
const EventsConsumer = "correlation_events"

// ActiveLeaseKey is the key of the leases bucket held by the active replica.
const ActiveLeaseKey = "correlation.active"

// Deps are what the service is given.
type Deps struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Logger *slog.Logger
	Tracer trace.TracerProvider
	// Clock drives alert times, timeouts, silences and the lease; default the real clock.
	Clock clock.Clock
}

// Consumers are the service's durable consumers of hub streams, provisioned by the hub (the
// partition consumers are the service's own, see partition.go). MaxDeliver is unlimited:
// the router never naks — it retries a failed publish in place — and poison events go to
// the DLQ at once. AckWait outlasts any batch; a stalled replica's events come back after it.
func Consumers() []bus.ConsumerSpec {
	cs := []bus.ConsumerSpec{{Stream: bus.StreamEvents, Name: EventsConsumer, Filters: []string{"event.>"},
		AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: 20_000,
		Description: "correlation: every event, routed to its partition by any replica"}}
	return append(cs, poll.Consumers()...)
}

type service struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	clock clock.Clock
	store alertStore
	kvSil jetstream.KeyValue
	kvLse jetstream.KeyValue
	pub   *bus.Publisher
	dlq   *bus.DeadLetterer
	cis   *ciBinder
	// router and owner: the two halves of the pipeline (router.go, owner.go).
	router *router
	// routeJS is the router's own JetStream context: its window of unacknowledged async
	// publishes (Routers × Batch) is not shared with other users of the connection, whose
	// bursts would otherwise stall it into retries.
	routeJS jetstream.JetStream
	owner   *owner
	rules   *ruleSet
	notify  *notifier
	rem     *remediator
	col     *collectors // metrics and pull connectors (collect.go)

	// applied counts the partition events written into alerts and acknowledged (status,
	// benchmarks); onWrite, when set (benchmarks), sees every alert a partition wrote.
	applied atomic.Int64
	onWrite func(*api.Alert)

	silMu    sync.RWMutex
	silences map[string]api.Silence

	// Topology groups (topology.go): computed by the lease holder, watched by every replica.
	kvTopo     jetstream.KeyValue
	topo       *topologist
	topoMu     sync.RWMutex
	topoGroups map[string]api.TopologyGroup
	topoOf     map[string]topoRef
}

// Run serves until ctx ends and returns nil on a clean stop.
func Run(ctx context.Context, cfg Config, deps Deps) error { return run(ctx, cfg, deps, nil) }

// run is Run with a hook that sees the service once it is built (tests).
func run(ctx context.Context, cfg Config, deps Deps, started func(*service)) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s, err := newService(ctx, cfg, deps)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	if started != nil {
		started(s)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if err := s.watchSilences(wctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := s.watchTopology(wctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	svc, err := bus.AddService(ctx, deps.NC, bus.ServiceConfig{Name: Service, Version: version.Semver(),
		Description: "events into deduplicated alerts; silences", Endpoints: s.endpoints(), Logger: s.log})
	if err != nil {
		return err
	}
	defer func(svc micro.Service) { _ = svc.Stop() }(svc)
	return s.serve(ctx)
}

func newService(ctx context.Context, cfg Config, deps Deps) (*service, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", Service)
	kvA, err := deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVAlerts))
	if err != nil {
		return nil, fmt.Errorf("correlation: bucket %s: %w", KVAlerts, err)
	}
	kvS, err := deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVSilences))
	if err != nil {
		return nil, fmt.Errorf("correlation: bucket %s: %w", KVSilences, err)
	}
	kvN, err := deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVNotifications))
	if err != nil {
		return nil, fmt.Errorf("correlation: bucket %s: %w", KVNotifications, err)
	}
	kvT, err := deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVTopology))
	if err != nil {
		return nil, fmt.Errorf("correlation: bucket %s: %w", KVTopology, err)
	}
	kvL, err := deps.JS.KeyValue(ctx, bus.KVLeases)
	if err != nil {
		return nil, fmt.Errorf("correlation: bucket %s (provisioned by the hub's topology): %w", bus.KVLeases, err)
	}
	rules, err := LoadRules(cfg.RulesDir)
	if err != nil {
		return nil, fmt.Errorf("correlation: rule files: %w", err)
	}
	clk := clock.Or(deps.Clock)
	s := &service{cfg: cfg, deps: deps, log: log, clock: clk, store: alertStore{kv: kvA}, kvSil: kvS, kvLse: kvL,
		pub: bus.NewPublisher(deps.JS, envelope.ServiceSource(Service), deps.Tracer),
		dlq: bus.NewDeadLetterer(deps.JS, Service, log, nil), silences: map[string]api.Silence{},
		kvTopo: kvT, topoGroups: map[string]api.TopologyGroup{}, topoOf: map[string]topoRef{}}
	s.cis = newCIBinder(deps.NC, clk, cfg)
	s.rules = rules
	s.router = &router{s: s}
	if s.routeJS, err = jetstream.New(deps.NC, jetstream.WithPublishAsyncMaxPending(2*cfg.Routers*cfg.Batch)); err != nil {
		return nil, fmt.Errorf("correlation: jetstream: %w", err)
	}
	s.notify = newNotifier(s, kvN)
	s.rem = newRemediator(s)
	s.owner = newOwner(s)
	s.topo = newTopologist(s, kvT)
	if s.col, err = newCollectors(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

// serve runs the router (every replica) and the partitions this replica owns until ctx
// ends.
func (s *service) serve(ctx context.Context) error {
	if err := ensurePartitions(ctx, s.deps.JS, s.cfg.Partitions); err != nil {
		return err
	}
	if err := ensureLedger(ctx, s.deps.JS); err != nil {
		return err
	}
	var wg sync.WaitGroup
	var routeErr error
	wg.Go(func() { routeErr = s.router.run(ctx) })
	wg.Go(func() { _ = s.owner.run(ctx) })
	wg.Go(func() { s.notify.run(ctx) })
	wg.Go(func() { s.topo.run(ctx) })
	wg.Go(func() { s.rem.run(ctx) })
	if s.col != nil { // a service built by hand in a test or benchmark has none
		wg.Go(func() { s.col.run(ctx, s) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return routeErr
}

// notFound is the 404 of an unknown alert or silence.
func notFound(what, id string) error {
	return bus.Errorf(http.StatusNotFound, "no %s %q: list them with outpost %ss ls", what, id, what)
}
