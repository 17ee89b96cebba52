// Package agents is the hub's side of the bridges: sites and their enrollment tokens, the
// agent registry (enrollment, approval, revocation, heartbeats), the NATS auth callout that
// turns the registry into per-site permissions, the probe consumers of each site, control
// commands relayed to bridges, and ad-hoc probes.
package agents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Config of the agents service.
type Config struct {
	Version string
}

// Deps are what the service talks to.
type Deps struct {
	NC *nats.Conn // a hub (auth-callout-exempt) connection
	JS jetstream.JetStream
	// Issuer signs the callout's answers; its public key is the server's auth_callout issuer.
	Issuer nkeys.KeyPair
	// Kick closes every connection of an authorized user (site.name), so a revoked agent is
	// cut off at once and an approved one reconnects into its new permissions. Optional.
	Kick   func(user string) error
	Logger *slog.Logger
	// Ready is called once every subscription is in place (may be nil).
	Ready func()
	// Now is the clock of token expiry and enrollment times (tests); nil is time.Now.
	Now func() time.Time
	// HubKey is the curve public key credentials are sealed with (discovery's), told to
	// bridges at enrollment so they can pin it.
	HubKey string
	// ReleaseKey is the hub's release public key (libs/release), told to approved bridges at
	// enrollment so they pin it and run only builds it signed.
	ReleaseKey string
}

// Service is the running agents service.
type Service struct {
	reg  *Registry
	deps Deps
	log  *slog.Logger
	pub  *bus.Publisher
	// builds serves bridge builds from the object store (BuildChunk).
	builds *builds
	// ensured remembers the (site, capabilities, apps) whose consumers exist.
	ensured sync.Map
	// synced remembers the (state, apps) of each agent last written to its site's
	// bus.SiteBridges record.
	synced sync.Map
	// refused remembers when a key's refused enrollment was last logged.
	refused sync.Map
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	if deps.NC == nil || deps.JS == nil || deps.Issuer == nil {
		return errors.New("agents: NC, JS and Issuer are required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "agents")
	if deps.Now == nil {
		deps.Now = time.Now
	}
	reg, err := OpenRegistry(ctx, deps.JS, deps.Now)
	if err != nil {
		return err
	}
	s := &Service{reg: reg, deps: deps, log: log, pub: bus.NewPublisher(deps.JS, envelope.ServiceSource("agents"), nil),
		builds: &builds{js: deps.JS}}
	co := &callout{reg: reg, issuer: deps.Issuer, log: log}
	calloutSub, err := deps.NC.QueueSubscribe(CalloutSubject, "agents", func(m *nats.Msg) { co.handle(ctx, m) })
	if err != nil {
		return fmt.Errorf("agents: auth callout: %w", err)
	}
	defer calloutSub.Unsubscribe()
	beatSub, err := deps.NC.QueueSubscribe("agent.heartbeat.>", "agents", func(m *nats.Msg) { s.onHeartbeat(ctx, m) })
	if err != nil {
		return err
	}
	defer beatSub.Unsubscribe()
	if cfg.Version == "" {
		cfg.Version = "0.0.0-dev"
	}
	svc, err := bus.AddService(ctx, deps.NC, bus.ServiceConfig{Name: "agents", Version: cfg.Version,
		Description: "sites, bridge enrollment, registry, control and ad-hoc probes", Endpoints: s.endpoints(), Logger: log})
	if err != nil {
		return err
	}
	defer svc.Stop()
	// Consumers of every approved agent's site exist from the start (idempotent).
	if all, err := reg.Agents(ctx); err == nil {
		for _, a := range all {
			if a.State == StateApproved {
				if err := s.ensureConsumers(ctx, a); err != nil {
					log.Error("probe consumers", "site", a.Site, "err", err)
				}
			}
			if err := s.syncSiteBridges(ctx, a); err != nil {
				log.Error("site bridges", "site", a.Site, "err", err)
			}
		}
	}
	if deps.Ready != nil {
		deps.Ready()
	}
	<-ctx.Done()
	return nil
}

// onHeartbeat records a bridge's heartbeat. The subject names who sent it (NATS permissions
// guarantee an agent can only publish its own), so the body must agree.
func (s *Service) onHeartbeat(ctx context.Context, m *nats.Msg) {
	_, hb, err := envelope.DecodeInto[*envelope.Heartbeat](m.Header, m.Data)
	if err != nil {
		s.log.Warn("unreadable heartbeat", "subject", m.Subject, "err", err)
		return
	}
	if m.Subject != bus.HeartbeatSubject(hb.Site, hb.Agent) {
		s.log.Warn("heartbeat body does not match its subject", "subject", m.Subject, "agent", hb.Agent, "site", hb.Site)
		return
	}
	if err := s.reg.RecordBeat(ctx, hb); err != nil {
		s.log.Warn("record heartbeat", "err", err)
	}
}

// ensureConsumers creates the site's probe consumers for the agent's capabilities and
// applications: one per (priority, capability, lane), shared by every bridge of the site
// serving the lane. Bridges re-enroll every 30 s to refresh their ranges; the consumers are
// only (re)declared when a site's (capabilities, apps) set is new to this process.
func (s *Service) ensureConsumers(ctx context.Context, a Agent) error {
	key := a.Site + "|" + strings.Join(a.Capabilities, ",") + "|" + strings.Join(a.Apps, ",")
	if _, done := s.ensured.Load(key); done {
		return nil
	}
	var errs []error
	for _, prio := range envelope.Priorities {
		for _, c := range a.Capabilities {
			if !bus.ValidName(c) {
				continue
			}
			for _, lane := range bus.Lanes(a.Apps) {
				_, err := s.deps.JS.CreateOrUpdateConsumer(ctx, bus.StreamProbes, ProbeConsumerConfig(a.Site, prio, c, lane))
				errs = append(errs, err)
			}
		}
	}
	err := errors.Join(errs...)
	if err == nil {
		s.ensured.Store(key, true)
	}
	return err
}

// syncSiteBridges rewrites the site's bus.SiteBridges record (which applications its
// approved bridges serve; probe publishers read it) when this agent's state or apps are new
// to this process. The record is rebuilt from the registry, never patched, so replicas
// writing it concurrently converge on the next change or restart.
func (s *Service) syncSiteBridges(ctx context.Context, a Agent) error {
	key := a.Key()
	val := a.State + "|" + strings.Join(a.Apps, ",")
	if v, ok := s.synced.Load(key); ok && v.(string) == val {
		return nil
	}
	if err := s.reg.WriteSiteBridges(ctx, a.Site); err != nil {
		return fmt.Errorf("site %s bridges: %w", a.Site, err)
	}
	s.synced.Store(key, val)
	return nil
}

// ProbeConsumerConfig is the durable pull consumer of one (site, priority, capability,
// lane). AckWait is short so a killed bridge's probes reach a sibling quickly; long probes call
// InProgress. MaxDeliver is generous: a probe only fails for good through its deadline (TTL).
func ProbeConsumerConfig(site, prio, capability, lane string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       bus.ProbeConsumer(site, prio, capability, lane),
		Description:   fmt.Sprintf("%s probes of site %s, %s priority, %s lane", capability, site, prio, lane),
		FilterSubject: bus.ProbeSubject(site, prio, capability, lane),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       probeAckWait,
		MaxDeliver:    20,
		MaxAckPending: 10_000,
	}
}
