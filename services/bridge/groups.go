package bridge

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// The probe consumers a bridge pulls are its site's groups of cells it serves
// (bus.ProbeGroups): the hub tells it their keys at enrollment, and the auth callout grants
// it exactly those. They change when the site's bridges do (one dedicated to other
// applications joins, one leaves): the hub then deletes the old consumers, declares the new
// ones and closes the connections of the bridges whose groups changed, and a bridge that
// reconnects (or finds a consumer gone or refused) re-reads its groups here and pulls the
// new consumers.

// regroupEvery bounds how often a bridge asks the hub for its groups when something
// suggests they changed (a reconnect, a consumer gone or refused): a hub that is down must
// not be asked in a tight loop.
const regroupEvery = 2 * time.Second

// groupSet holds the bridge's current group keys.
type groupSet struct {
	mu   sync.Mutex
	keys []string
	// changed is signalled (never blocking) when the groups may have changed.
	changed chan struct{}
}

func newGroupSet() *groupSet { return &groupSet{changed: make(chan struct{}, 1)} }

// set records keys and reports whether they differ from the current ones.
func (g *groupSet) set(keys []string) bool {
	keys = slices.Sorted(slices.Values(keys))
	g.mu.Lock()
	defer g.mu.Unlock()
	if slices.Equal(g.keys, keys) {
		return false
	}
	g.keys = keys
	return true
}

func (g *groupSet) get() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.keys
}

// suspect asks the supervisor to re-read the groups.
func (g *groupSet) suspect() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// consumerNames are the bridge's probe consumers with the pool each feeds.
func (b *Bridge) consumerNames() map[string]*pool {
	out := map[string]*pool{}
	for _, key := range b.groups.get() {
		for _, p := range envelope.Priorities {
			out[bus.ProbeConsumer(b.cfg.Site, p, key)] = b.pools[p]
		}
	}
	return out
}

// superviseConsumers runs one pull loop per consumer of the bridge's groups, and follows
// the groups when they change, until ctx ends (then it waits for its pull loops).
func (b *Bridge) superviseConsumers(ctx context.Context, inflight *sync.WaitGroup) {
	type running struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	pulls := map[string]running{}
	defer func() {
		for _, r := range pulls {
			r.cancel()
		}
		for _, r := range pulls {
			<-r.done
		}
	}()
	for {
		want := b.consumerNames()
		if len(want) == 0 {
			b.log.Warn("the hub assigned this bridge no probe consumers: it takes no probes until it does (a hub older than this bridge?)")
		}
		for name, r := range pulls {
			if _, ok := want[name]; !ok {
				r.cancel()
				<-r.done
				delete(pulls, name)
			}
		}
		for name, p := range want {
			if _, ok := pulls[name]; ok {
				continue
			}
			pctx, cancel := context.WithCancel(ctx)
			r := running{cancel: cancel, done: make(chan struct{})}
			pulls[name] = r
			go func() { defer close(r.done); b.pull(pctx, p, name, inflight) }()
		}
		select {
		case <-ctx.Done():
			return
		case <-b.groups.changed:
		}
		b.regroup(ctx)
		// Space the asks out; a signal meanwhile is kept (channel of one) for the next round.
		select {
		case <-ctx.Done():
			return
		case <-b.clock.After(regroupEvery):
		}
	}
}

// regroup asks the hub for the bridge's groups; when they changed, the connection is
// renewed so that the callout grants the new consumers (the hub closes it itself when it
// has an embedded server; a hub of separate processes cannot).
func (b *Bridge) regroup(ctx context.Context) {
	reply, err := b.enrollOnce(ctx)
	if err != nil || reply.Status != "approved" {
		b.log.Debug("re-reading probe groups", "err", err, "status", reply.Status)
		return
	}
	if !b.groups.set(reply.ProbeGroups) {
		return
	}
	b.log.Info("the site's probe groups changed: pulling the new consumers", "groups", reply.ProbeGroups)
	if err := b.nc.ForceReconnect(); err != nil {
		b.log.Warn("reconnect into the new probe groups", "err", err)
	}
}

// onConnError hears the connection's asynchronous errors: a permissions violation on one
// of the site's probe consumers (a JetStream API or pull request the callout no longer
// grants) means this bridge holds stale groups — the server only says so this way, the
// request itself just times out — so the groups are re-read (spaced out by the supervisor,
// or by reconnectIntoSite before it runs).
func (b *Bridge) onConnError(_ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), bus.ProbeConsumerPrefix(b.cfg.Site)) {
		b.groups.suspect()
	}
}
