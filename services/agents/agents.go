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
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// ProfileInterval: a bridge's profile (apps, capabilities) changes at most once per
	// interval; each change regroups its site's consumers and kicks bridges, so one bridge
	// must not churn its site. Enrollments changing it sooner are refused (429). 0: the default
	// (DefaultProfileInterval); negative: no limit.
	ProfileInterval time.Duration
	// ConsumerCheckInterval: a re-registering bridge's site has its probe consumers checked
	// (and re-declared when one is missing, e.g. deleted by hand) at most once per interval.
	// 0: DefaultConsumerCheckInterval.
	ConsumerCheckInterval time.Duration
}

// Defaults of Config.
const (
	DefaultProfileInterval       = 5 * time.Minute
	DefaultConsumerCheckInterval = time.Minute
)

// Validate reports every problem of the config.
func (c Config) Validate() error {
	var errs []error
	if c.ConsumerCheckInterval < 0 {
		errs = append(errs, fmt.Errorf("agents: consumer check interval %s: want 0 (default) or more", c.ConsumerCheckInterval))
	}
	return errors.Join(errs...)
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
	// declared remembers each site's groups (planSignature) whose consumers this process
	// declared.
	declared sync.Map
	// siteMu serialises syncSite per site.
	siteMu sync.Map
	// refused remembers when a key's refused enrollment was last logged.
	refused sync.Map
	// profileRefused counts enrollments refused for changing a profile too often.
	profileRefused atomic.Int64
	// consumersChecked remembers when each site's consumers were last checked.
	consumersChecked sync.Map
	consumerCheck    time.Duration
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
	if err := cfg.Validate(); err != nil {
		return err
	}
	reg, err := OpenRegistry(ctx, deps.JS, deps.Now)
	if err != nil {
		return err
	}
	switch {
	case cfg.ProfileInterval == 0:
		reg.ProfileInterval = DefaultProfileInterval
	case cfg.ProfileInterval > 0:
		reg.ProfileInterval = cfg.ProfileInterval
	}
	if cfg.ConsumerCheckInterval == 0 {
		cfg.ConsumerCheckInterval = DefaultConsumerCheckInterval
	}
	s := &Service{reg: reg, deps: deps, log: log, pub: bus.NewPublisher(deps.JS, envelope.ServiceSource("agents"), nil),
		builds: &builds{js: deps.JS}, consumerCheck: cfg.ConsumerCheckInterval}
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
	// Every site's consumers and record are in line with the registry from the start.
	if all, err := reg.Agents(ctx); err == nil {
		done := map[string]bool{}
		for _, a := range all {
			if done[a.Site] {
				continue
			}
			done[a.Site] = true
			if _, err := s.syncSite(ctx, a.Site); err != nil {
				log.Error("site probe consumers", "site", a.Site, "err", err)
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

// syncSite brings a site's probe consumers, its bus.SiteBridges record and its bridges'
// rights in line with the registry, after an agent of the site enrolled, re-registered,
// was approved, revoked or forgotten. The record is rebuilt from the registry, never
// patched. Consumers are (re)declared when the site's groups are new to this process or
// differ from the stored record's, and the record is then written conditionally on the
// revision read before the registry was: of two replicas declaring at once, one from an
// older registry, the loser's write fails and it reads and declares again, so the last
// consumers declared are always the current registry's. When the groups differ from the
// stored record's, the bridges whose groups changed are kicked: their connections carry
// grants for the old consumers, and they reconnect into the new ones (and re-read their
// groups: Bridge.regroup).
// It returns the site's groups.
func (s *Service) syncSite(ctx context.Context, site string) ([]bus.ProbeGroup, error) {
	mu, _ := s.siteMu.LoadOrStore(site, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	for range 10 {
		// The record first: a write another replica makes after this read fails ours.
		old, rev, found, err := s.reg.StoredSiteBridges(ctx, site)
		if err != nil {
			return nil, fmt.Errorf("site %s bridges: %w", site, err)
		}
		sb, err := s.reg.SiteBridges(ctx, site)
		if err != nil {
			return nil, fmt.Errorf("site %s bridges: %w", site, err)
		}
		groups := sb.Groups()
		plan := planSignature(groups)
		oldGroups := old.Groups()
		declare := !found || planSignature(oldGroups) != plan
		if v, ok := s.declared.Load(site); !ok || v.(string) != plan {
			declare = true
		}
		if declare {
			if err := s.declareConsumers(ctx, site, groups); err != nil {
				s.declared.Delete(site)
				return nil, fmt.Errorf("site %s probe consumers: %w", site, err)
			}
		}
		if declare || !sameBridges(old, sb) {
			err := s.reg.WriteSiteBridges(ctx, sb, rev)
			if errors.Is(err, errRecordChanged) {
				s.declared.Delete(site)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("site %s bridges: %w", site, err)
			}
		}
		s.declared.Store(site, plan)
		if !found || s.deps.Kick == nil {
			return groups, nil
		}
		// Only a bridge whose own groups changed needs new rights: one joining beside identical
		// siblings changes no one's.
		for name := range sb.Bridges {
			was, now := bus.GroupKeysOf(oldGroups, name), bus.GroupKeysOf(groups, name)
			if _, known := old.Bridges[name]; !known || slices.Equal(was, now) {
				continue // a new bridge connects (or reconnects) into its rights by itself
			}
			s.log.Info("the bridge's probe groups changed: it reconnects into the new consumers", "site", site, "agent", name, "groups", now)
			if err := s.deps.Kick(site + "." + name); err != nil {
				s.log.Warn("kick after the site's probe groups changed", "site", site, "agent", name, "err", err)
			}
		}
		return groups, nil
	}
	return nil, bus.Errorf(409, "site %s: its bridges record kept changing while its probe consumers were declared; try again", site)
}

// checkConsumers makes sure the site's probe consumers exist, at most once per
// consumerCheck per site (a bridge re-registers every 30 s): one deleted by hand, or by a
// replica that declared from an older registry, is declared again instead of leaving the
// bridges pulling nothing.
func (s *Service) checkConsumers(ctx context.Context, site string, groups []bus.ProbeGroup) {
	now := s.deps.Now()
	if last, ok := s.consumersChecked.Load(site); ok && now.Sub(last.(time.Time)) < s.consumerCheck {
		return
	}
	s.consumersChecked.Store(site, now)
	for _, prio := range envelope.Priorities {
		for _, g := range groups {
			name := bus.ProbeConsumer(site, prio, g.Key)
			_, err := s.deps.JS.Consumer(ctx, bus.StreamProbes, name)
			if err == nil {
				continue
			}
			if !errors.Is(err, jetstream.ErrConsumerNotFound) {
				s.log.Warn("check probe consumer", "site", site, "consumer", name, "err", err)
				return
			}
			s.log.Warn("a probe consumer of the site is missing: declaring the site's consumers again", "site", site, "consumer", name)
			s.declared.Delete(site)
			if _, err := s.syncSite(ctx, site); err != nil {
				s.log.Error("re-declare the site's probe consumers", "site", site, "err", err)
			}
			return
		}
	}
}

// planSignature tells two sets of groups apart by their consumers (their keys).
func planSignature(groups []bus.ProbeGroup) string {
	var b strings.Builder
	for _, g := range groups {
		b.WriteString(g.Key + ";")
	}
	return b.String()
}

func sameBridges(a, b bus.SiteBridges) bool {
	return maps.EqualFunc(a.Bridges, b.Bridges, slices.Equal) && maps.EqualFunc(a.Capabilities, b.Capabilities, slices.Equal)
}

// declareConsumers makes the site's probe consumers exactly one per (priority, group):
// first it deletes the site's consumers that are not (a group that split or merged, a
// consumer of the per-lane layout before it), since a WorkQueue stream refuses a consumer
// whose filters overlap another's; then it creates the missing ones. A deleted consumer's
// probes stay in the stream and the new group's consumer delivers them; one a bridge held
// unacked is delivered again and settled by the bridge's executed-probe record.
func (s *Service) declareConsumers(ctx context.Context, site string, groups []bus.ProbeGroup) error {
	want := map[string]jetstream.ConsumerConfig{}
	for _, prio := range envelope.Priorities {
		for _, g := range groups {
			cfg := ProbeConsumerConfig(site, prio, g)
			want[cfg.Durable] = cfg
		}
	}
	st, err := s.deps.JS.Stream(ctx, bus.StreamProbes)
	if err != nil {
		return err
	}
	var errs []error
	names := st.ConsumerNames(ctx)
	var stale []string
	for n := range names.Name() {
		if _, ok := want[n]; !ok && strings.HasPrefix(n, bus.ProbeConsumerPrefix(site)) {
			stale = append(stale, n)
		}
	}
	if err := names.Err(); err != nil {
		return err
	}
	for _, n := range stale {
		if err := st.DeleteConsumer(ctx, n); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			errs = append(errs, fmt.Errorf("delete %s: %w", n, err))
		}
	}
	for _, cfg := range want {
		if _, err := st.CreateOrUpdateConsumer(ctx, cfg); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", cfg.Durable, err))
		}
	}
	return errors.Join(errs...)
}

// ProbeConsumerConfig is the durable pull consumer of one group of a site at a priority.
// AckWait is short so a killed bridge's probes reach a sibling quickly; long probes call
// InProgress. MaxDeliver is generous: a probe only fails for good through its deadline (TTL).
func ProbeConsumerConfig(site, prio string, g bus.ProbeGroup) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        bus.ProbeConsumer(site, prio, g.Key),
		Description:    fmt.Sprintf("probes of site %s, %s priority, capability.lane: %s", site, prio, strings.Join(g.Cells, " ")),
		FilterSubjects: g.Filters(site, prio),
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        probeAckWait,
		MaxDeliver:     20,
		MaxAckPending:  10_000,
	}
}
