package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// heartbeats publish on core NATS from their own goroutine: they never wait behind probes,
// whatever the pools are doing (the MID server's "heartbeat queued behind work" false alarm).
func (b *Bridge) heartbeats(ctx context.Context) {
	t := b.clock.NewTicker(b.deps.HeartbeatEvery)
	defer t.Stop()
	subject := bus.HeartbeatSubject(b.cfg.Site, b.cfg.Name)
	source := envelope.AgentSource(b.cfg.Site, b.cfg.Name)
	for {
		hb := b.heartbeat()
		h, data, err := envelope.Encode(envelope.Meta{Source: source, Time: hb.Time}, hb)
		if err == nil {
			err = b.nc.PublishMsg(&nats.Msg{Subject: subject, Header: h, Data: data})
		}
		if err == nil {
			// the hub's server has it: healthy, as far as a new build's trial is concerned
			if err = b.nc.FlushTimeout(5 * time.Second); err == nil {
				b.healthyOnce.Do(func() { close(b.healthy) })
			}
		}
		if err != nil {
			b.log.Debug("heartbeat", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

func (b *Bridge) heartbeat() *envelope.Heartbeat {
	pools := map[string]envelope.PoolStats{}
	for name, p := range b.pools {
		pools[name] = envelope.PoolStats{Size: cap(p.slots), Busy: int(p.busy.Load()), Queued: int(p.queued.Load())}
	}
	var age float64
	if oldest := b.box.Oldest(context.Background()); !oldest.IsZero() {
		age = max(0, b.clock.Since(oldest).Seconds())
	}
	return &envelope.Heartbeat{Agent: b.cfg.Name, Site: b.cfg.Site, Version: b.cfg.Version, Capabilities: b.caps, Apps: b.cfg.Apps,
		Pools: pools, OutboxBytes: b.box.Bytes(), OutboxFull: b.box.Full(), OutboxMessages: b.box.Pending(), OutboxAge: age,
		ProbesDone: b.done.Load(), State: b.state.Load().(string),
		ResultsDirect: b.box.SentDirect(), ResultsStored: b.box.Stored(), DirectFailures: b.box.DirectFailures(),
		Uptime: b.clock.Since(b.started).Seconds(), RSS: rss(), ProbePanics: b.panics.Load(), Upgrade: b.upgradeRecord().String(), Time: b.clock.Now().UTC()}
}

// rss reads the resident set size of this process (Linux), 0 elsewhere.
func rss() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmRSS:")); ok {
			n, _ := strconv.ParseInt(string(bytes.Fields(v)[0]), 10, 64)
			return n << 10
		}
	}
	return 0
}

// onControl answers ping, pause, resume, drain and logs from the hub (the agents service's
// control op: libs/api/agents).
func (b *Bridge) onControl(m *nats.Msg) {
	var req agentsapi.ControlCommand
	_ = json.Unmarshal(m.Data, &req)
	out := agentsapi.ControlReply{OK: true, Agent: b.cfg.Name, Site: b.cfg.Site}
	switch req.Command {
	case agentsapi.CommandPing:
		out.State, out.Version, out.Heartbeat = b.state.Load().(string), b.cfg.Version, b.heartbeat()
	case agentsapi.CommandPause:
		b.state.CompareAndSwap(stateRunning, statePaused)
		out.State = b.state.Load().(string)
		b.log.Info("paused by the hub: taking no new work")
	case agentsapi.CommandResume:
		b.state.CompareAndSwap(statePaused, stateRunning)
		out.State = b.state.Load().(string)
		b.log.Info("resumed by the hub")
	case agentsapi.CommandDrain:
		b.state.Store(stateDraining)
		out.State = stateDraining
		b.log.Info("draining: finishing work in flight, then exiting")
		b.drainMu.Do(func() { close(b.drained) })
	case agentsapi.CommandLogs:
		n := req.Lines
		if n <= 0 {
			n = 100
		}
		out.Lines = b.ring.last(n)
	default:
		out.OK, out.Error = false, "unknown command "+strconv.Quote(req.Command)
	}
	data, _ := json.Marshal(out)
	_ = m.Respond(data)
}
