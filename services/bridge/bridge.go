package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/bridge/collect"
	"github.com/outpost-dev/outpost/services/bridge/identity"
	"github.com/outpost-dev/outpost/services/bridge/outbox"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/status"
)

// Deps are what a bridge is given rather than builds: tests inject an in-process hub
// connection, a fast heartbeat and their own probe kinds.
type Deps struct {
	Logger *slog.Logger
	// Kinds are the probe kinds this binary has (one registration list per binary).
	Kinds []probe.Factory
	// ConnectOptions are appended to the hub connection's options.
	ConnectOptions []nats.Option
	// HeartbeatEvery defaults to 10 s.
	HeartbeatEvery time.Duration
	// Ready is called once the bridge is approved and pulling work.
	Ready func()
	// Clock drives the work loop's keep-alives and waits, heartbeats, timestamps and the
	// outbox's timers; default the real clock. Probe kinds get it through their Settings.
	Clock clock.Clock
	// SelfUpgrade lets the bridge take the version its hub pins for the site: only the
	// outpost-bridge binary, whose caller re-executes on a RestartError (an in-process
	// bridge, such as the hub's local one, cannot replace its process).
	SelfUpgrade bool
	// Tracer records a span per probe executed and per result put in the outbox, in the
	// trace the probe came with (its traceparent header); nil: no spans, the context is
	// still passed on to the results.
	Tracer trace.TracerProvider
}

// Bridge states reported in heartbeats.
const (
	stateRunning  = "running"
	statePaused   = "paused"
	stateDraining = "draining"
)

// Bridge is a running site agent.
type Bridge struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	clock   clock.Clock
	ring    *logRing
	id      identity.Identity
	nkey    string
	nc      *nats.Conn
	js      jetstream.JetStream
	box     *outbox.Outbox
	allow   *allowList
	hubKey  *hubKey
	runners map[string]probe.Runner // by kind
	kindCap map[string]string       // kind → capability
	caps    []string
	lanes   []string  // probe lanes of cfg.Apps (bus.Lanes)
	groups  *groupSet // the site's probe consumer groups this bridge pulls (groups.go)
	pools   map[string]*pool
	started time.Time

	// claims are the probes executing here, and awaiting those whose final result is in the
	// outbox but not yet at the hub, by that result's id: the probe is acked only once the
	// hub has the result, so a bridge that dies with results still in its outbox loses
	// nothing — the probe is redelivered, and its result sent from the executed-probe store.
	workMu   sync.Mutex
	claims   map[string]*claim // probe id → claim
	awaiting map[string]*claim // final result id → claim
	// sendSlots bounds the final results on their way to the hub after their workers went
	// back to their pools (execute): resultsInFlight at most.
	sendSlots chan struct{}

	// replayed counts redeliveries answered with the stored result instead of a second
	// execution; unrecorded counts executions the executed-probe store could not record
	// (full): those probes may run again if redelivered.
	replayed   atomic.Int64
	unrecorded atomic.Int64

	// panics counts probes whose kind panicked (reported in heartbeats).
	panics atomic.Int64
	// scans: the tcp_scan chunks this bridge holds, and those it handed back (scanshare.go)
	scans scanShare
	// done counts probes executed (reported in heartbeats: the hub's /metrics per bridge).
	done atomic.Int64

	state   atomic.Value // string
	drained chan struct{}
	drainMu sync.Once

	// The status file (statusfile.go): the phase of the bridge's life, the hub connection
	// once made (read by the status goroutine), the last write error, the self-upgrade's
	// state, and since when the hub connection is in its current state.
	phaseV, ncV, statusErr, upgradeState atomic.Value
	// cols are the running collectors, for the status file.
	cols     atomic.Pointer[collect.Collectors]
	hubMu    sync.Mutex
	hubSince time.Time
	hubWas   bool

	// up is the self-upgrade (selfupgrade.go); healthy is closed once a heartbeat reached
	// the hub, which ends a new build's trial.
	up          *selfUpgrade
	healthy     chan struct{}
	healthyOnce sync.Once
}

// pool is one priority's bounded set of workers.
type pool struct {
	name   string
	slots  chan struct{}
	busy   atomic.Int64
	queued atomic.Int64
}

// Run runs the bridge until ctx ends (returns nil) or a drain completes (returns nil too:
// the process exits 0). Everything it needs to keep is in cfg.DataDir.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	b, err := newBridge(ctx, cfg, deps)
	if err != nil {
		return err
	}
	// A self-upgrade (or its rollback) stops the bridge as a shutdown would — work finished,
	// outbox closed — and then the caller re-executes into the other build.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-b.up.restart:
			cancel()
		case <-rctx.Done():
		}
	}()
	err = b.run(rctx)
	select {
	case <-b.up.restart:
		return &RestartError{Decision: b.up.to}
	default:
	}
	return err
}

func newBridge(ctx context.Context, cfg Config, deps Deps) (*Bridge, error) {
	base := deps.Logger
	if base == nil {
		base = slog.New(slog.DiscardHandler)
	}
	ring := newLogRing(1000)
	log := slog.New(newRingHandler(base.Handler(), ring)).With("component", "bridge", "site", cfg.Site, "agent", cfg.Name)
	if deps.HeartbeatEvery == 0 {
		deps.HeartbeatEvery = 10 * time.Second
	}
	id, err := identity.LoadOrCreate(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	allow, err := newAllowList(cfg.Allow)
	if err != nil {
		return nil, err
	}
	hk, err := loadHubKey(filepath.Join(cfg.DataDir, "hub-curve.pub"))
	if err != nil {
		return nil, err
	}
	clk := clock.Or(deps.Clock)
	b := &Bridge{cfg: cfg, deps: deps, log: log, clock: clk, ring: ring, id: id, allow: allow, hubKey: hk, runners: map[string]probe.Runner{},
		kindCap: map[string]string{}, pools: map[string]*pool{}, started: clk.Now(), drained: make(chan struct{}),
		claims: map[string]*claim{}, awaiting: map[string]*claim{}, sendSlots: make(chan struct{}, resultsInFlight), healthy: make(chan struct{}), groups: newGroupSet()}
	if err := b.initUpgrade(); err != nil {
		return nil, err
	}
	b.nkey, _ = id.Public()
	b.state.Store(stateRunning)
	set := probe.Settings{Logger: log, Dial: allow.dialer(), Allowed: allow.Allowed, MaxOutput: 512 << 10, Now: clk.Now}
	kindCfg, err := KindConfigs(deps.Kinds, cfg.Kinds)
	if err != nil {
		return nil, fmt.Errorf("probe kind config: %w", err)
	}
	for _, f := range deps.Kinds {
		spec := f.Spec()
		if len(cfg.Capabilities) > 0 && !slices.Contains(cfg.Capabilities, spec.Capability) {
			continue
		}
		r, err := f.Create(ctx, set, kindCfg[spec.Kind])
		if err != nil {
			return nil, fmt.Errorf("probe kind %s: %w", spec.Kind, err)
		}
		b.runners[spec.Kind] = r
		b.kindCap[spec.Kind] = spec.Capability
		if !slices.Contains(b.caps, spec.Capability) {
			b.caps = append(b.caps, spec.Capability)
		}
	}
	if len(b.caps) == 0 {
		return nil, fmt.Errorf("no probe kind offers any of the capabilities %v", cfg.Capabilities)
	}
	slices.Sort(b.caps)
	b.lanes = bus.Lanes(cfg.Apps)
	for _, p := range envelope.Priorities {
		b.pools[p] = &pool{name: p, slots: make(chan struct{}, cfg.Pools[p])}
	}
	return b, nil
}

func (b *Bridge) run(ctx context.Context) error {
	var err error
	b.box, err = outbox.Open(ctx, outbox.Config{Dir: b.cfg.DataDir, MaxBytes: int64(b.cfg.OutboxMax), Logger: b.log, Sent: b.onSent, Clock: b.clock})
	if err != nil {
		return err
	}
	defer b.box.Close()
	sctx, stopStatus := context.WithCancel(context.WithoutCancel(ctx))
	statusDone := make(chan struct{})
	go b.statusLoop(sctx, statusDone)
	go b.trialWatch(ctx, b.healthy)
	defer func() {
		stopStatus()
		<-statusDone
		b.setPhase(status.PhaseStopped)
		b.writeStatus(context.Background())
	}()
	cols, err := b.startCollectors(ctx)
	if err != nil {
		return err
	}
	if cols != nil {
		b.cols.Store(cols)
		defer func() { cols.Close(); b.log.Info("collectors stopped", "counts", cols.Counts()) }()
	}
	if n := b.box.Pending(); n > 0 {
		b.log.Info("outbox holds results from before the restart; they will be sent", "results", n, "bytes", b.box.Bytes())
	}
	opts := []nats.Option{
		nats.Nkey(b.nkey, b.id.Sign),
		nats.CustomInboxPrefix(bus.InboxPrefix(b.nkey)),
		// A refusal can be the hub restarting: keep trying; a revoked bridge is simply refused.
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectBufSize(64 << 20),
	}
	if b.cfg.Token != "" {
		opts = append(opts, nats.Token(b.cfg.Token))
	}
	if remote := b.cfg.PlaintextRemote(); len(remote) > 0 {
		b.log.Warn("INSECURE: plaintext connection to a remote hub (--insecure-plaintext): the token and every result cross the network in clear; use tls:// or wss://",
			"hub", remote)
	}
	b.setPhase(status.PhaseConnecting)
	b.nc, err = bus.Connect(bus.ConnectConfig{URL: b.cfg.Hub, Name: "bridge " + b.cfg.Site + "/" + b.cfg.Name,
		CAFile: b.cfg.CAFile, CertFile: b.cfg.CertFile, KeyFile: b.cfg.KeyFile,
		Proxy: b.cfg.Proxy, ProxyFromEnvironment: true,
		Options: append(opts, b.deps.ConnectOptions...), Logger: b.log, OnError: b.onConnError})
	if err != nil {
		return err
	}
	defer b.nc.Close()
	b.ncV.Store(b.nc)
	// The hub's JetStream API reaches BRIDGES under a prefix of its own (libs/bus/accounts.go).
	// The publish-async timeout lets the library drop the futures of acks that never come
	// (the forwarder itself gives up on them at outbox.AckTimeout, on the bridge's clock).
	b.js, err = jetstream.NewWithAPIPrefix(b.nc, bus.BridgeJSAPIPrefix, jetstream.WithPublishAsyncTimeout(2*outbox.AckTimeout))
	if err != nil {
		return err
	}
	b.log.Info("bridge starting", "hub", bus.RedactURL(b.cfg.Hub), "nkey", b.nkey, "capabilities", b.caps, "apps", b.lanes, "data", filepath.Clean(b.cfg.DataDir))

	if err := b.enroll(ctx); err != nil {
		return err
	}
	wctx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	var wg sync.WaitGroup
	go b.heartbeats(wctx)
	ctl, err := b.nc.Subscribe(bus.ControlSubject(b.cfg.Site, b.cfg.Name), func(m *nats.Msg) { b.onControl(m) })
	if err != nil {
		return fmt.Errorf("control subject: %w", err)
	}
	defer ctl.Unsubscribe()
	fctx, stopForward := context.WithCancel(context.WithoutCancel(ctx))
	forwardDone := make(chan struct{})
	go func() { _ = b.box.Forward(fctx, b.js); close(forwardDone) }()
	var inflight sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); b.superviseConsumers(wctx, &inflight) }()
	go b.refreshSite(wctx)
	b.setPhase(status.PhaseRunning)
	b.writeStatus(ctx)
	b.log.Info("bridge ready: pulling work", "pools", b.cfg.Pools)
	if b.deps.Ready != nil {
		b.deps.Ready()
	}
	drained := false
	select {
	case <-ctx.Done():
	case <-b.drained:
		drained = true
	}
	// Stop pulling, let running probes finish (their results go to the hub or the outbox), and
	// on a drain wait until the hub has every result.
	stopWork()
	wg.Wait()
	done := make(chan struct{})
	go func() { inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-b.clock.After(30 * time.Second):
		b.log.Warn("probes still running after 30 s; leaving them (they will be redelivered)")
	}
	if drained {
		deadline := b.clock.Now().Add(time.Minute)
		for b.box.Pending() > 0 && b.clock.Now().Before(deadline) {
			<-b.clock.After(50 * time.Millisecond)
		}
		b.log.Info("drained: no work in flight, outbox sent", "outbox_pending", b.box.Pending())
	}
	stopForward()
	<-forwardDone
	// Results are safe in the outbox; heartbeats and acks only need a flush.
	_ = b.nc.FlushTimeout(time.Second)
	return nil
}

// enroll asks the hub to register this bridge (signed with its NKey) and waits until it is
// approved. The connection it made while pending only allows enrolling, so once approved it
// reconnects, and the hub's auth callout gives it its site's permissions.
func (b *Bridge) enroll(ctx context.Context) error {
	loggedPending := false
	for {
		reply, err := b.enrollOnce(ctx)
		switch {
		case err == nil && reply.Status == "approved":
			b.allow.setSite(reply.Ranges, reply.Exclude)
			if err := b.hubKey.learn(reply.HubKey); err != nil {
				b.log.Error("hub sealing key", "err", err)
			}
			b.onEnrollReply(ctx, reply.ReleaseKey, reply.PinnedVersion)
			b.groups.set(reply.ProbeGroups)
			b.log.Info("approved by the hub", "ranges", reply.Ranges, "exclude", reply.Exclude, "probe_groups", reply.ProbeGroups)
			return b.reconnectIntoSite(ctx)
		case err == nil:
			b.setPhase(status.PhasePending)
			if !loggedPending {
				b.log.Info("enrolled: pending approval (outpost agents approve " + b.cfg.Name + ")")
				loggedPending = true
			}
		default:
			var se *bus.ServiceError
			if errors.As(err, &se) && (se.Code == 403 || se.Code == 404 || se.Code == 409 || se.Code == 400 || se.Code == 429) {
				b.log.Error("enrollment refused", "err", se.Message)
			} else {
				b.log.Debug("enroll", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.clock.After(2 * time.Second):
		}
	}
}

func (b *Bridge) enrollOnce(ctx context.Context) (envelope.EnrollmentReply, error) {
	_, xkey := b.id.Public()
	e := envelope.Enrollment{Name: b.cfg.Name, Site: b.cfg.Site, Token: b.cfg.Token, NKey: b.nkey, XKey: xkey,
		Version: b.cfg.Version, Capabilities: b.caps, Apps: b.cfg.Apps, Pools: b.cfg.Pools, Time: b.clock.Now().UTC()}
	sig, err := b.id.Sign(e.SigningBytes())
	if err != nil {
		return envelope.EnrollmentReply{}, err
	}
	e.Sig = encodeSig(sig)
	var reply envelope.EnrollmentReply
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = bus.Request(rctx, b.nc, "agents", "enroll", e, &reply)
	return reply, err
}

// reconnectIntoSite drops the pending-rights connection and waits until the new one can see
// the site's probe consumers.
func (b *Bridge) reconnectIntoSite(ctx context.Context) error {
	reconnected := make(chan struct{}, 1)
	b.nc.SetReconnectHandler(func(nc *nats.Conn) {
		b.log.Info("reconnected to hub", "server", nc.ConnectedUrlRedacted())
		// A kick after the site's probe groups changed ends in a reconnect: re-read them.
		b.groups.suspect()
		select {
		case reconnected <- struct{}{}:
		default:
		}
	})
	if err := b.nc.ForceReconnect(); err != nil {
		return err
	}
	select {
	case <-reconnected:
	case <-b.clock.After(10 * time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	asked := b.clock.Now() // the enrollment that approved us read the groups just now
	for {
		keys := b.groups.get()
		if len(keys) == 0 {
			return nil // nothing to wait for: superviseConsumers says so
		}
		probeCons := bus.ProbeConsumer(b.cfg.Site, envelope.PriorityInteractive, keys[0])
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := b.js.Consumer(cctx, bus.StreamProbes, probeCons)
		cancel()
		if err == nil {
			return nil
		}
		b.log.Debug("waiting for the site's consumers", "consumer", probeCons, "err", err)
		// A consumer missing or refused (the callout grants only the current groups' consumers:
		// a refusal is a permissions violation and this request times out) may mean the groups
		// changed since the hub answered — a sibling with another profile enrolled meanwhile,
		// and its kick found this bridge between connections. Ask the hub again (spaced out)
		// instead of waiting forever on a stale name; regroup reconnects when they changed.
		if now := b.clock.Now(); now.Sub(asked) >= regroupEvery {
			asked = now
			b.regroup(ctx)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.clock.After(200 * time.Millisecond):
		}
	}
}

// refreshSite re-reads the site's ranges now and then: the hub may change them.
func (b *Bridge) refreshSite(ctx context.Context) {
	t := b.clock.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		reply, err := b.enrollOnce(ctx)
		var se *bus.ServiceError
		if errors.As(err, &se) && se.Code == 429 {
			b.log.Warn("profile change refused by the hub", "err", se.Message)
		}
		if err == nil && reply.Message != "" {
			b.log.Warn("hub: " + reply.Message)
		}
		if err == nil && reply.Status == "approved" {
			b.allow.setSite(reply.Ranges, reply.Exclude)
			if err := b.hubKey.learn(reply.HubKey); err != nil {
				b.log.Error("hub sealing key", "err", err)
			}
			b.onEnrollReply(ctx, reply.ReleaseKey, reply.PinnedVersion)
			if !slices.Equal(slices.Sorted(slices.Values(reply.ProbeGroups)), b.groups.get()) {
				b.groups.suspect()
			}
		}
	}
}
