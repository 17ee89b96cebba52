package bridge

import (
	"context"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/services/bridge/status"
)

// statusLoop rewrites the status file in the data dir every status.Every until ctx ends,
// then once more as stopped; `outpost-bridge status` reads it without the hub.
func (b *Bridge) statusLoop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := b.clock.NewTicker(status.Every)
	defer t.Stop()
	for {
		b.writeStatus(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// writeStatus writes the status file now; a failure is logged once per kind of error, the
// bridge goes on (its status is a convenience, not its work).
func (b *Bridge) writeStatus(ctx context.Context) {
	if err := status.Write(b.cfg.DataDir, b.status(ctx)); err != nil {
		if b.statusErr.Swap(err.Error()) != err.Error() {
			b.log.Warn("status file not written", "err", err)
		}
	}
}

func (b *Bridge) status(ctx context.Context) status.Status {
	now := b.clock.Now().UTC()
	s := status.Status{Version: b.cfg.Version, Site: b.cfg.Site, Name: b.cfg.Name, PID: os.Getpid(), Phase: b.phase(),
		Apps: b.cfg.Apps, Capabilities: b.caps, Started: b.started.UTC(), Updated: now, Pools: map[string]status.Pool{},
		Hub: status.Hub{URL: bus.RedactURL(b.cfg.Hub)}}
	if v, ok := b.upgradeState.Load().(string); ok {
		s.Upgrade = v
	}
	if cols := b.cols.Load(); cols != nil {
		s.Collectors = map[string]status.Collector{}
		for src, n := range cols.Counts() {
			s.Collectors[src] = status.Collector(n)
		}
	}
	for name, p := range b.pools {
		s.Pools[name] = status.Pool{Size: cap(p.slots), Busy: int(p.busy.Load()), Queued: int(p.queued.Load())}
	}
	if b.box != nil {
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		s.Outbox = status.Outbox{Results: b.box.Pending(), Bytes: b.box.Bytes(), MaxBytes: int64(b.cfg.OutboxMax), Full: b.box.Full(),
			Oldest: b.box.Oldest(octx).UTC(), Direct: b.box.SentDirect(), Stored: b.box.Stored(), DirectFailures: b.box.DirectFailures()}
		cancel()
		if s.Outbox.Oldest.Equal(time.Time{}.UTC()) {
			s.Outbox.Oldest = time.Time{}
		}
	}
	if nc := b.conn(); nc != nil {
		connected := nc.Status() == nats.CONNECTED
		s.Hub.Connected = connected
		if connected {
			s.Hub.Server = nc.ConnectedUrlRedacted()
		}
		s.Hub.Reconnects = nc.Stats().Reconnects
		if err := nc.LastError(); err != nil {
			s.Hub.LastError = err.Error()
		}
		// Since: when the connected state last changed, as this loop saw it.
		b.hubMu.Lock()
		if b.hubSince.IsZero() || b.hubWas != connected {
			b.hubSince, b.hubWas = now, connected
		}
		s.Hub.Since = b.hubSince
		b.hubMu.Unlock()
	}
	return s
}

// phase is what the bridge is doing, for the status file.
func (b *Bridge) phase() string {
	if p, _ := b.phaseV.Load().(string); p != status.PhaseRunning {
		if p == "" {
			return status.PhaseStarting
		}
		return p
	}
	switch b.state.Load() {
	case statePaused:
		return status.PhasePaused
	case stateDraining:
		return status.PhaseDraining
	}
	return status.PhaseRunning
}

func (b *Bridge) setPhase(p string) { b.phaseV.Store(p) }

// conn is the hub connection once made.
func (b *Bridge) conn() *nats.Conn {
	nc, _ := b.ncV.Load().(*nats.Conn)
	return nc
}
