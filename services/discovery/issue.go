package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Issuing a probe means building it — its host key, the site's credentials sealed to its
// bridges, each a request on the bus — and registering it as pending. Under load one of
// those requests times out now and then (the /16 bench lost the SNMP sweep of every address
// after the one whose credential lookup hit the turn's deadline). So a probe is issued
// through issue: a transient failure is retried at once a few times with a short backoff,
// and if it persists the probe is registered pending anyway, marked unsent with the reason,
// and built again on later turns (sendUnsent) with a growing backoff — the run waits for it
// like for any pending probe, it is on record in KVPending (a restart builds it again), and
// its siblings go on. A probe that still cannot be built after maxBuildTries turns, or whose
// failure is not transient, is given up: its host's log and the run's errors say why, and
// Counters.ProbesUnsent counts it.
//
// A turn builds at most maxBuildsPerTurn probes: the rest of a /16's sweep is registered
// unsent ("deferred") and built over the next turns, so a turn never holds the run's lock
// for minutes nor outlives its context half-way through a loop.
const (
	maxBuildsPerTurn = 2048
	// buildAttempts is how often one turn tries a probe whose build fails transiently.
	buildAttempts = 3
	// maxBuildTries is how many turns try to build a probe before it is given up.
	maxBuildTries = 8
	// maxFailingInTurn: after that many probes in a row failed every attempt in one turn,
	// the dependency is taken as down for the turn: the rest wait for the next one untried.
	maxFailingInTurn = 4
)

// reasonDeferred is the unsent reason of a probe the turn had no budget left to build.
const reasonDeferred = "deferred: the turn's build budget is spent"

// reasonWindow is the unsent reason of a sweep probe that waits for a place in the run's
// window of sweep probes out (Config.SweepInFlight, RunRecord.SweepWindow).
const reasonWindow = "waiting: the run's SNMP sweep probes out are at their bound (sweep in flight)"

// The SNMP sweep of a large range is paced: a run keeps at most SweepWindow sweep probes out
// (sent, no final result yet). Published at the rate the hub builds them, a /16's probes
// waited at the site's bridges past their 30 s deadline and had to be sent again; kept to a
// window, each waits in the bridge's queue a few seconds at most. A sweep probe beyond the
// window is registered pending and unsent (written ahead, like a deferred one) and built on
// a later turn once results have freed places.

// sweepFull reports whether the run has its window of sweep probes out. The count is taken
// once per turn (the first time a sweep probe is issued), then kept by issue and expire.
func (t *turn) sweepFull() bool {
	w := t.run.SweepWindow
	if w <= 0 {
		return false
	}
	if !t.sweepCounted {
		t.sweepCounted = true
		for _, p := range t.run.Pending {
			if p.Step == StepSweep && p.Unsent == "" {
				t.sweepOut++
			}
		}
	}
	return t.sweepOut >= w
}

// transient reports whether err may pass if the same step is tried again soon: a timeout,
// a service without responders or that says retry, a JetStream request without answer.
func transient(err error) bool {
	var se *bus.ServiceError
	switch {
	case err == nil:
		return false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected):
		return true
	case errors.As(err, &se):
		return se.Retryable()
	}
	return false
}

// buildBackoff is how long after its tries-th failed turn an unsent probe is tried again.
func buildBackoff(tries int) time.Duration {
	d := 500 * time.Millisecond
	for range max(tries-1, 0) {
		d *= 2
		if d >= 10*time.Second {
			return 10 * time.Second
		}
	}
	return d
}

// issue builds the probe of req through pr and registers it pending. It returns the probe
// (nil when deferred: registered unsent, built on a later turn) and its pending record; or
// the error of a probe that cannot be built (not transient: errNoCredentials, a rule's bad
// params…), then nothing is registered.
func issue(ctx context.Context, pr prober, t *turn, req probeRequest) (*envelope.Probe, *pendingProbe, error) {
	if t.built >= maxBuildsPerTurn || t.failing >= maxFailingInTurn || ctx.Err() != nil {
		return nil, t.registerUnsent(req, reasonDeferred, false), nil
	}
	if req.Step == StepSweep && t.sweepFull() {
		return nil, t.registerUnsent(req, reasonWindow, false), nil
	}
	var err error
	for attempt := range buildAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			break
		}
		var p *envelope.Probe
		if p, err = pr.probe(ctx, t, req); err == nil {
			t.built++
			t.failing = 0
			if req.Step == StepSweep {
				t.sweepOut++
			}
			return p, t.run.Pending[p.ID], nil
		}
		if !transient(err) {
			return nil, nil, err
		}
	}
	if err == nil {
		err = ctx.Err()
	}
	t.failing++
	return nil, t.registerUnsent(req, err.Error(), true), nil
}

// registerUnsent registers req's probe as pending but not built (reason: why); failed
// counts a try (a build that failed, not one the turn had no budget for) and sets when the
// next is due.
func (t *turn) registerUnsent(req probeRequest, reason string, failed bool) *pendingProbe {
	id := req.ID
	if id == "" {
		id = envelope.NewID()
	}
	pp, ok := t.run.Pending[id]
	if !ok {
		pp = &pendingProbe{IP: req.IP, Step: req.Step, Kind: req.Spec.Kind, Name: req.Spec.Name, Port: req.Port,
			Cred: req.Spec.Credentials, Deadline: t.now.Add(req.Timeout)}
		t.run.Pending[id] = pp
		t.run.Counters.ProbesSent++ // as register does: given up, it moves to ProbesUnsent
	}
	if failed || pp.Unsent == "" {
		pp.Unsent = reason
	}
	if failed {
		pp.Tries++
		pp.Retry = t.now.Add(buildBackoff(pp.Tries))
	}
	t.rs.dirty = true
	if !ok {
		t.unsentNow++
	}
	return pp
}

// sendUnsent builds the run's unsent probes that are due, oldest reason first (by id), up to
// the turn's budget; gives up those that failed maxBuildTries turns or cannot be built.
func (p *pipeline) sendUnsent(ctx context.Context, t *turn) {
	var due []string
	for id, pp := range t.run.Pending {
		if pp.Unsent != "" && !t.now.Before(pp.Retry) {
			due = append(due, id)
		}
	}
	if len(due) == 0 {
		return
	}
	slices.Sort(due)
	gaveUp := map[string][]string{} // "step name: reason" → addresses, for the run's errors
	for _, id := range due {
		pp := t.run.Pending[id]
		if t.built >= maxBuildsPerTurn || t.failing >= maxFailingInTurn || ctx.Err() != nil {
			break
		}
		if pp.Step == StepSweep && t.sweepFull() {
			continue // waits for a place in the run's sweep window
		}
		np, _, err := p.rebuild(ctx, t, pp, id, pp.Resends)
		if err == nil && np == nil && pp.Tries < maxBuildTries {
			continue // still unsent: tried again after its backoff
		}
		if err == nil && np != nil {
			t.out = append(t.out, np)
			if h := t.rs.hosts[pp.IP]; h != nil {
				t.hostLog(h, HostLog{Step: pp.Step, Kind: pp.Kind, Probe: id, Status: "sent", Note: pp.Name + credNote(np) + " (its build had to wait)"})
			}
			continue
		}
		why := pp.Unsent
		if err != nil {
			why = err.Error()
		} else {
			why = fmt.Sprintf("%s (after %d tries)", why, pp.Tries)
		}
		delete(t.run.Pending, id)
		t.rs.dirty = true
		if errors.Is(err, errNoCredentials) {
			t.run.Counters.ProbesSent--
			// the site's credentials of the type were removed meanwhile: skipped, as when
			// there were none at the start
			if h := t.rs.hosts[pp.IP]; h != nil {
				t.hostLog(h, HostLog{Step: pp.Step, Kind: pp.Kind, Status: "skipped", Note: pp.Name + ": no " + pp.Cred + " credential for site " + t.run.Site})
			}
			continue
		}
		t.run.Counters.ProbesUnsent++
		t.run.Counters.ProbesSent--
		if h := t.rs.hosts[pp.IP]; h != nil {
			t.hostLog(h, HostLog{Step: pp.Step, Kind: pp.Kind, Probe: id, Status: "error", Error: pp.Name + ": not sent: " + why})
		}
		k := fmt.Sprintf("%s %s: probe not sent: %s", pp.Step, pp.Name, why)
		addr := pp.IP
		if pp.Step == StepScan {
			addr = strings.Join(pp.Targets, ",")
		}
		gaveUp[k] = append(gaveUp[k], addr)
	}
	for _, k := range slices.Sorted(maps.Keys(gaveUp)) {
		addrs := gaveUp[k]
		t.run.errorf(fmt.Sprintf("%s — %d addresses: %s", k, len(addrs), strings.Join(addrs[:min(len(addrs), 10)], " ")))
	}
}

// noteUnsent logs (once per turn) how many probes the turn left unsent.
func (t *turn) noteUnsent() {
	if t.unsentNow == 0 {
		return
	}
	t.logf(fmt.Sprintf("%d probes left unsent this turn (build budget spent, or a step of their build failed transiently): kept pending, built on the next turns", t.unsentNow))
}
