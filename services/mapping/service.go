// Package mapping is Service Mapping: an application service is declared by its entry point
// ("the payroll portal at https://payroll.corp:443") and mapped top-down through the site's
// bridges — on the entry host, which process listens on the port (ss -ltnp sport = :P), which
// application that is (patterns, data in patterns/*.yaml), where it connects (established
// sockets and what its configuration names), resolved to host:port and followed there —
// bounded by depth, the site's ranges and hosts already visited. The map goes to the CMDB
// through the IRE (source service_mapping): an application_service CI containing its
// applications, depends_on along the traffic, runs_on to hosts. A scheduler (one replica,
// libs/lease) re-maps services so the map stays current.
//
// What it keeps: the services, their latest maps (a few versions) and the mappings in
// progress (resumed after a crash: runs.go) in three KV buckets. Probes go through
// svc.agents.probe (ad-hoc ssh_exec, credentials sealed by discovery to the site's
// bridges), so the service adds no subject a bridge touches.
package mapping

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	api "github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/lease"
	"github.com/outpost-dev/outpost/libs/version"
)

// Service is the name on the bus: svc.mapping.<op>.
const Service = api.Service

// KV buckets of the service, and the scheduler's lease key.
const (
	KVServices       = "mapping_services"
	KVMaps           = "mapping_maps"
	ScheduleLeaseKey = "mapping.scheduler"
)

// Deps are what Run needs from its host process.
type Deps struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Logger *slog.Logger
	Tracer trace.TracerProvider
	// Clock drives the scheduler and timestamps; default the real clock.
	Clock clock.Clock
	// Prober replaces the bridges (tests of real software run commands another way); nil:
	// ssh_exec probes through svc.agents.probe.
	Prober func(site string) Prober
	// Ready is called once the endpoints serve.
	Ready func()
}

// Consumers: the service binds none (its probes are request/reply through svc.agents.probe
// and its CMDB writes are synchronous svc.cmdb.ingest calls).
func Consumers() []bus.ConsumerSpec { return nil }

type service struct {
	cfg      Config
	deps     Deps
	clock    clock.Clock
	log      *slog.Logger
	patterns *Patterns
	kvSvc    jetstream.KeyValue
	kvMaps   jetstream.KeyValue
	kvRuns   jetstream.KeyValue

	// life is the service's context: mappings end with the service, not with the request
	// that started them.
	life context.Context

	mu      sync.Mutex
	running map[string]chan struct{} // service name → closed when its mapping ends

	wg sync.WaitGroup
}

func (s *service) now() time.Time { return s.clock.Now().UTC() }

// Run serves Service Mapping until ctx ends.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("mapping config: %w", err)
	}
	if deps.NC == nil || deps.JS == nil {
		return errors.New("mapping: NATS connection and JetStream are required")
	}
	s, err := newService(ctx, cfg, deps)
	if err != nil {
		return err
	}
	svc, err := bus.AddService(ctx, deps.NC, bus.ServiceConfig{Name: Service, Version: version.Semver(),
		Description: "service mapping: application services mapped top-down from their entry point", Endpoints: s.endpoints(), Logger: s.log})
	if err != nil {
		return err
	}
	defer func() { _ = svc.Stop() }()
	if deps.Ready != nil {
		deps.Ready()
	}
	// this replica's runs cut short by its previous life (a crash, a kill) start again now
	s.resumeRuns(ctx, false)
	leases, err := deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(bus.KVLeases))
	if err != nil {
		return fmt.Errorf("kv %s: %w", bus.KVLeases, err)
	}
	active := lease.New(lease.Config{JS: deps.JS, KV: leases, Key: ScheduleLeaseKey, Holder: cfg.Replica, TTL: cfg.LeaseTTL,
		Clock: s.clock, Logger: s.log, Name: "mapping scheduler"})
	if err := active.Serve(ctx, s.schedule, nil); err != nil {
		s.log.Error("mapping scheduler stopped", "err", err)
	}
	<-ctx.Done()
	s.wg.Wait()
	return nil
}

func newService(ctx context.Context, cfg Config, deps Deps) (*service, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Replica == "" {
		cfg.Replica = envelope.NewID()
	}
	pats, err := LoadPatterns(cfg.PatternsDir)
	if err != nil {
		return nil, fmt.Errorf("mapping patterns: %w", err)
	}
	s := &service{life: ctx, cfg: cfg, deps: deps, clock: clock.Or(deps.Clock), log: log.With("component", Service), patterns: pats,
		running: map[string]chan struct{}{}}
	if s.kvSvc, err = deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVServices)); err != nil {
		return nil, fmt.Errorf("kv %s: %w", KVServices, err)
	}
	if s.kvMaps, err = deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVMaps)); err != nil {
		return nil, fmt.Errorf("kv %s: %w", KVMaps, err)
	}
	if s.kvRuns, err = deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVRuns)); err != nil {
		return nil, fmt.Errorf("kv %s: %w", KVRuns, err)
	}
	return s, nil
}

// schedule re-maps services whose next map is due, while this replica holds the lease.
func (s *service) schedule(ctx context.Context) error {
	t := s.clock.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		s.remapDue(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

func (s *service) remapDue(ctx context.Context) {
	svcs, err := s.all(ctx)
	if err != nil {
		s.log.Warn("scheduler: list services", "err", err)
		return
	}
	now := s.now()
	for _, a := range svcs {
		if a.NextMap.IsZero() || a.NextMap.After(now) {
			continue
		}
		s.startMapping(a.Name, reasonSchedule)
	}
	// runs whose replica stopped beating (it died, or its host did) are resumed here
	s.resumeRuns(ctx, true)
}
