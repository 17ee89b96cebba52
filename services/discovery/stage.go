package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
)

// A discovery run is a pipeline of stages over its state (runState: the run record and its
// hosts), each a small type that moves the run forward by one kind of work:
//
//	scan      resolve the ranges, send tcp_scan chunks and the SNMP sweep, wait for them
//	classify  send each live host the probes its open ports call for, then run the
//	          classifiers on what answered: a class and attributes, or "unclassified"
//	explore   send a classified host the probes of its class
//	identify  once a host's probes are in, send its payload to the CMDB (which identifies
//	          and reconciles its CIs)
//	ingest    once every host is done: LLDP relations between them, the CMDB's receipts
//	          (bounded by ReceiptWait), and the run's completion
//
// A turn (every Tick, and at once for a new run) runs the stages in that order under the
// run's lock. Stages do no I/O of their own but through ports (prober, scope,
// payloadSender) and read the time from the turn, never from a clock: a test drives a
// whole run's timeline by handing turns a fake time. What a turn changed is written to KV
// and its probes published by the service afterwards (service.advance).
type stage interface {
	// advance does the stage's work for this turn; hold stops the turn here (the run waits
	// for this stage, later ones do not run).
	advance(ctx context.Context, t *turn) (hold bool)
}

// turn is one pass of the pipeline over a run: the time it runs at, and what it produced.
type turn struct {
	rs  *runState
	run *RunRecord
	now time.Time

	out     []*envelope.Probe // registered as pending; published once the run's lock is released
	touched map[string]*Host  // hosts to write to KV
	// classified are the hosts the classify stage gave a class in this turn: the explore
	// stage sends them the probes of their class.
	classified []classified
	// built counts the probes this turn built, failing the probes in a row whose build
	// failed every attempt, unsentNow the probes it registered unsent (issue.go).
	built, failing, unsentNow int
	// sweepOut counts the run's sweep probes out (sent, no final result), once sweepCounted
	// (issue.go, sweepFull).
	sweepOut     int
	sweepCounted bool
}

// classified is a host and the classifier that gave it its class.
type classified struct {
	host *Host
	by   *Classifier
}

func newTurn(rs *runState, now time.Time) *turn {
	return &turn{rs: rs, run: rs.run, now: now, touched: map[string]*Host{}}
}

// touch marks a host (and so the run) changed.
func (t *turn) touch(h *Host) {
	t.touched[h.IP] = h
	t.rs.dirty = true
}

func (t *turn) logf(s string) { t.run.logf(t.now, s) }

// hostLog adds a line, at the turn's time, to a host's log and marks it changed.
func (t *turn) hostLog(h *Host, e HostLog) {
	e.Time = t.now
	h.logf(e)
	t.touch(h)
}

// finish ends the run in state with reason.
func (t *turn) finish(state, reason string) {
	finishRun(t.run, t.now, state, reason)
	t.rs.dirty = true
}

func finishRun(r *RunRecord, now time.Time, state, reason string) {
	r.State, r.Reason = state, reason
	r.Finished = &now
	r.Pending = nil
	r.logf(now, "run "+state+": "+reason)
}

// busy counts pending probes by address.
func (t *turn) busy() map[string]int {
	m := map[string]int{}
	for _, p := range t.run.Pending {
		m[p.IP]++
	}
	return m
}

// hostsIn lists the run's hosts in one of stages, by address.
func (t *turn) hostsIn(stages ...string) []*Host {
	var out []*Host
	for _, ip := range slices.Sorted(maps.Keys(t.rs.hosts)) {
		if h := t.rs.hosts[ip]; slices.Contains(stages, h.Stage) {
			out = append(out, h)
		}
	}
	return out
}

// probeRequest asks a prober for one probe of a run.
type probeRequest struct {
	Spec    ProbeSpec
	IP      string
	Port    int
	Step    Step
	Timeout time.Duration
	// ID, when set, is the id of a pending probe sent again (after a restart): the same id,
	// so the bus drops the copy while the first is in its dedup window, and results of either
	// are accepted.
	ID string
}

// prober builds a run's probes (params, known host key, sealed credentials) and registers
// them as pending (turn.register). errNoCredentials: the site has none of the type asked.
type prober interface {
	probe(ctx context.Context, t *turn, req probeRequest) (*envelope.Probe, error)
}

// scope tells a run what it may scan and whether a bridge can take the work.
type scope interface {
	site(ctx context.Context, name string) (site, error)
	recipients(ctx context.Context, site string) ([]string, error)
	// scanners is how many approved bridges of the site take discovery's tcp_scan probes.
	scanners(ctx context.Context, site string) (int, error)
}

// payloadSender puts a payload on the CMDB's ingest stream, with a stable message id.
type payloadSender interface {
	sendPayload(ctx context.Context, run, id string, p *envelope.CIPayload) error
}

// probeEnvelope is the probe of req for the run, without credentials; its deadline is
// req.Timeout from the turn's time.
func probeEnvelope(t *turn, req probeRequest, extra map[string]any) (*envelope.Probe, error) {
	params := map[string]any{}
	maps.Copy(params, req.Spec.Params)
	if req.Port > 0 {
		params["port"] = req.Port
	}
	maps.Copy(params, extra)
	raw, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("probe %s params: %w", req.Spec.Name, err)
	}
	id := req.ID
	if id == "" {
		id = envelope.NewID()
	}
	return &envelope.Probe{ID: id, Run: t.run.ID, App: Service, Site: t.run.Site, Priority: envelope.PriorityStandard,
		Kind: req.Spec.Kind, Capability: catalog.Capability(req.Spec.Kind), Target: req.IP, Params: raw,
		Deadline: t.now.Add(req.Timeout)}, nil
}

// register makes p pending in the run: its final result is awaited. A probe sent again
// keeps what its results already brought (scan chunks) and gets its new deadline.
func (t *turn) register(p *envelope.Probe, req probeRequest) *pendingProbe {
	if pp, ok := t.run.Pending[p.ID]; ok {
		pp.Deadline = p.Deadline
		// built at last (issue.go); counted sent when it was registered unsent
		pp.Unsent, pp.Tries, pp.Retry = "", 0, time.Time{}
		t.rs.dirty = true
		return pp
	}
	pp := &pendingProbe{IP: req.IP, Step: req.Step, Kind: req.Spec.Kind, Name: req.Spec.Name, Port: req.Port,
		Cred: req.Spec.Credentials, Deadline: p.Deadline}
	t.run.Pending[p.ID] = pp
	t.run.Counters.ProbesSent++
	t.rs.dirty = true
	return pp
}

// expireAfter is how long past its deadline a probe's result is still waited for: a bridge
// that took it just in time reports a timeout of its own, which says more.
const expireAfter = 15 * time.Second

// sweepTimeout is the deadline of an SNMP sweep probe: one UDP exchange with retries.
const sweepTimeout = 30 * time.Second

// pipeline runs a run's stages, after the checks that hold for the whole run: max run time,
// probes to send again after a restart, probes whose result will not come.
type pipeline struct {
	cfg    Config
	rules  *Classifiers
	probes prober
	stages []stage
	log    *slog.Logger // nil: not logged (the run's own log still says it)
}

func newPipeline(cfg Config, rules *Classifiers, sc scope, pr prober, sink payloadSender) *pipeline {
	return &pipeline{cfg: cfg, rules: rules, probes: pr, stages: []stage{
		&scanStage{cfg: cfg, rules: rules, scope: sc, probes: pr},
		&classifyStage{rules: rules, probes: pr, timeout: cfg.ProbeTimeout, sweptAll: cfg.SNMPEveryAddress},
		&exploreStage{probes: pr, timeout: cfg.ProbeTimeout},
		&identifyStage{rules: rules, sink: sink},
		&ingestStage{sink: sink, receiptWait: cfg.ReceiptWait},
	}}
}

// advance runs one turn of the run.
func (p *pipeline) advance(ctx context.Context, t *turn) {
	r := t.run
	switch {
	case terminalState(r.State):
		return
	case t.now.After(r.Deadline):
		t.finish(StateFailed, fmt.Sprintf("max run time reached (%s)", r.Deadline.Sub(r.Created).Round(time.Second)))
		return
	}
	if t.rs.resumed && r.State != StateQueued {
		t.rs.resumed = false
		p.reissue(ctx, t)
	}
	p.expire(ctx, t)
	p.sendUnsent(ctx, t)
	defer t.noteUnsent()
	for _, s := range p.stages {
		if s.advance(ctx, t) || terminalState(r.State) {
			return
		}
	}
}

// expire handles pending probes whose deadline passed long ago: their result will not come.
// Each is sent again under a new id with a doubled timeout (resend), at most ProbeResends
// times; then it is dropped and its host goes on without it.
func (p *pipeline) expire(ctx context.Context, t *turn) {
	resent, dropped := 0, 0
	for _, id := range slices.Sorted(maps.Keys(t.run.Pending)) {
		pp := t.run.Pending[id]
		if pp.Unsent != "" || pp.NotRun == "" && t.now.Before(pp.Deadline.Add(expireAfter)) {
			continue // an unsent probe's wait is sendUnsent's
		}
		delete(t.run.Pending, id)
		t.rs.dirty = true
		if pp.Step == StepSweep && t.sweepCounted {
			t.sweepOut-- // no longer out: its resend takes a place in the window again
		}
		h := t.rs.hosts[pp.IP]
		var why string
		if pp.Resends < p.cfg.ProbeResends {
			np, npp, err := p.rebuild(ctx, t, pp, "", pp.Resends+1)
			if err == nil {
				npp.Resends = pp.Resends + 1
				t.run.Counters.ProbesResent++
				if h != nil {
					note := fmt.Sprintf("sent again (%d of %d): probe %s got no result before its deadline (no bridge ran it in time); new deadline %s",
						pp.Resends+1, p.cfg.ProbeResends, id, npp.Deadline.Format(time.RFC3339))
					if pp.NotRun != "" {
						note = fmt.Sprintf("sent again (%d of %d): probe %s was not run (%s); new deadline %s",
							pp.Resends+1, p.cfg.ProbeResends, id, pp.NotRun, npp.Deadline.Format(time.RFC3339))
					}
					if np == nil {
						note = fmt.Sprintf("to be sent again (%d of %d): probe %s got no result before its deadline; its build waits: %s",
							pp.Resends+1, p.cfg.ProbeResends, id, npp.Unsent)
					}
					t.hostLog(h, HostLog{Step: pp.Step, Kind: pp.Kind, Probe: idOf(np, npp, t), Status: "sent", Note: note})
				}
				if np != nil {
					t.out = append(t.out, np)
				}
				resent++
				continue
			}
			why = "; not sent again: " + err.Error()
		} else if pp.Resends > 0 {
			why = fmt.Sprintf(" (after %d resends)", pp.Resends)
		}
		if pp.NotRun != "" {
			why += "; its last send was not run: " + pp.NotRun
		}
		dropped++
		if h != nil {
			t.hostLog(h, HostLog{Step: pp.Step, Kind: pp.Kind, Probe: id, Status: "timeout", Error: "no result before the probe's deadline" + why})
		}
		if pp.Step == StepScan {
			t.run.errorf(fmt.Sprintf("scan probe %s: no result before its deadline%s", id, why))
		}
	}
	if resent > 0 {
		t.logf(fmt.Sprintf("%d probes got no result before their deadline (no bridge ran them in time): sent again with new deadlines", resent))
	}
	if (resent > 0 || dropped > 0) && p.log != nil {
		p.log.Info("probes past their deadline without a result", "run", t.run.ID, "resent", resent, "given_up", dropped,
			"resent_total", t.run.Counters.ProbesResent, "not_run_total", t.run.Counters.ProbesNotRun)
	}
}

// timeout is the deadline a probe of step gets on its resends-th resend: the step's own,
// doubled per resend up to maxResendTimeout (never below the step's own).
func (p *pipeline) timeout(step Step, resends int) time.Duration {
	base := p.cfg.ProbeTimeout
	switch step {
	case StepScan:
		base = p.cfg.ScanTimeout
	case StepSweep:
		base = sweepTimeout
	}
	d := base
	for range resends {
		d *= 2
	}
	return max(base, min(d, maxResendTimeout))
}

// maxResendTimeout caps the doubled timeout of a resent probe: a site that stays cut off
// ends its hosts' wait within some half an hour, well inside MaxRunTime.
const maxResendTimeout = 10 * time.Minute

// rebuild makes the probe of a pending one again (through issue: a transient failure leaves
// it registered unsent, the probe nil): under id (a resend after a restart, or of an unsent
// probe: the same id) or a new id ("": the previous send expired), with the timeout of its
// resend.
func (p *pipeline) rebuild(ctx context.Context, t *turn, pp *pendingProbe, id string, resends int) (*envelope.Probe, *pendingProbe, error) {
	if pp.Step == StepScan {
		addrs, err := expand(pp.Targets, nil, 1<<20)
		if err != nil {
			return nil, nil, err
		}
		targets := make([]string, 0, len(addrs))
		for _, a := range addrs {
			targets = append(targets, a.String())
		}
		return scanProbe(ctx, p.probes, t, id, targets, pp.Ports, p.timeout(StepScan, resends))
	}
	spec, ok := p.specOf(pp)
	if !ok {
		return nil, nil, fmt.Errorf("probe %s is no longer in the classifiers", pp.Name)
	}
	return issue(ctx, p.probes, t, probeRequest{Spec: spec, IP: pp.IP, Port: pp.Port, Step: pp.Step, Timeout: p.timeout(pp.Step, resends), ID: id})
}

// idOf is the id of a probe issue returned: the probe's, or its pending record's (unsent).
func idOf(p *envelope.Probe, pp *pendingProbe, t *turn) string {
	if p != nil {
		return p.ID
	}
	for id, x := range t.run.Pending {
		if x == pp {
			return id
		}
	}
	return ""
}

// specOf is the current rules' spec of a pending classify, sweep or explore probe.
func (p *pipeline) specOf(pp *pendingProbe) (ProbeSpec, bool) {
	rules := p.rules.Current()
	for _, sp := range rules.Probes {
		if sp.Name == pp.Name && (pp.Step == StepClassify || pp.Step == StepSweep) {
			return sp, true
		}
	}
	for _, c := range rules.Classifiers {
		for _, sp := range c.Explore {
			if sp.Name == pp.Name && pp.Step == StepExplore {
				return sp, true
			}
		}
	}
	return ProbeSpec{}, false
}

// reissue sends every pending probe again after a restart, under its own id: the pending
// record is written before a probe is published, so some of them may never have left. A
// copy of one that did is dropped by the bus within its dedup window, or runs again (the
// bridge answers from its executed-probe store); either way its results — late ones of the
// first send included — are applied, since they name a pending probe.
func (p *pipeline) reissue(ctx context.Context, t *turn) {
	r := t.run
	sent := 0
	for _, id := range slices.Sorted(maps.Keys(r.Pending)) {
		pp := r.Pending[id]
		if pp.Unsent != "" {
			continue // never sent: sendUnsent builds it when due
		}
		np, _, err := p.rebuild(ctx, t, pp, id, pp.Resends)
		if err != nil {
			delete(r.Pending, id)
			r.Counters.ProbesUnsent++
			r.errorf(fmt.Sprintf("resend %s probe %s after restart: %v", pp.Kind, id, err))
			if h := t.rs.hosts[pp.IP]; h != nil {
				t.hostLog(h, HostLog{Step: pp.Step, Kind: pp.Kind, Probe: id, Status: "error", Error: pp.Name + ": not sent again after a restart: " + err.Error()})
			}
			continue
		}
		if np == nil {
			continue // its build must wait (issue.go): still pending, unsent, same id
		}
		if h := t.rs.hosts[pp.IP]; h != nil {
			t.hostLog(h, HostLog{Step: pp.Step, Kind: pp.Kind, Probe: np.ID, Status: "sent", Note: "sent again after a restart (same id: a late result of the first send counts)"})
		}
		t.out = append(t.out, np)
		sent++
	}
	if sent > 0 {
		t.logf(fmt.Sprintf("resumed after a restart: %d pending probes sent again", sent))
	}
	t.rs.dirty = true
}

// scanProbe is a tcp_scan chunk of targets × ports, pending with what it needs to be sent
// again after a restart.
// id is the probe's own id when it is sent again, "" for a new one. The pending copy keeps
// the targets as ranges: small whatever the chunk size.
// Issued through issue: the probe is nil when its build must wait (registered unsent).
func scanProbe(ctx context.Context, pr prober, t *turn, id string, targets []string, ports []int, timeout time.Duration) (*envelope.Probe, *pendingProbe, error) {
	spec := ProbeSpec{Name: string(StepScan), Kind: "tcp_scan", Params: map[string]any{"targets": targets, "ports": ports}}
	p, pp, err := issue(ctx, pr, t, probeRequest{Spec: spec, Step: StepScan, Timeout: timeout, ID: id})
	if err != nil {
		return nil, nil, err
	}
	if p != nil {
		p.Target = ""
	}
	pp.Addrs, pp.Targets, pp.Ports = len(targets), compactTargets(targets), ports
	return p, pp, nil
}
