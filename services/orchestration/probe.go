package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
	"github.com/outpost-dev/outpost/libs/probes/httprequest"
	"github.com/outpost-dev/outpost/libs/probes/sshexec"
)

// outgoing is a probe prepared in an advance of its run, to be sent by flush once its
// attempt is on record.
type outgoing struct {
	step  string // the step's (or item's) id
	key   string // its attempt's key, the probe's id
	msg   *nats.Msg
	probe *envelope.Probe
}

// dispatchProbe renders the step's probe and queues it on the run; flush records the
// attempt and then publishes the probe once. Its id is the attempt's idempotency key:
// JetStream drops a second publish of the same id, and a result is taken only for the
// attempt still in flight with that id. After a restart the attempt is not sent again: its
// result is awaited until its deadline.
func (s *service) dispatchProbe(ctx context.Context, a *active, step api.Step, st *api.StepRun, env map[string]any) {
	r := a.run
	att := &st.Attempts[len(st.Attempts)-1]
	if a.queued[att.Key] {
		return
	}
	spec, _ := catalog.Lookup(step.Kind)
	site, err := renderString(step.Site, env)
	if err != nil {
		s.attemptFailed(a, step, st, "site: "+err.Error(), true, 0)
		return
	}
	if step.SiteOf != "" {
		addr, err := renderString(step.SiteOf, env)
		if err != nil {
			s.attemptFailed(a, step, st, "site_of: "+err.Error(), true, 0)
			return
		}
		if site, err = s.siteOf(ctx, addr); err != nil {
			var pe *permanentError
			s.attemptFailed(a, step, st, err.Error(), errors.As(err, &pe), 0)
			return
		}
	}
	target, err := renderString(step.Target, env)
	if err != nil {
		s.attemptFailed(a, step, st, "target: "+err.Error(), true, 0)
		return
	}
	var creds []string
	for i, c := range step.Credentials {
		v, err := renderString(c, env)
		if err != nil {
			s.attemptFailed(a, step, st, fmt.Sprintf("credentials[%d]: %v", i, err), true, 0)
			return
		}
		creds = append(creds, v)
	}
	pv, err := render(step.Params, env)
	if err != nil {
		s.attemptFailed(a, step, st, "params."+err.Error(), true, 0)
		return
	}
	params, _ := jsonOf(pv)
	if len(step.Params) == 0 {
		params = nil
	} else if err := spec.ValidateParams(params); err != nil {
		s.attemptFailed(a, step, st, err.Error(), true, 0)
		return
	}
	prio := step.Priority
	if prio == "" {
		// MID server users know REST and commands on the expedited pool
		prio = envelope.PriorityExpedited
	}
	p := &envelope.Probe{ID: att.Key, Run: r.ID, App: Service, Site: site, Priority: prio, Kind: step.Kind,
		Capability: spec.Capability, Target: target, Params: params, Deadline: *att.Deadline}
	if err := p.Validate(); err != nil {
		s.attemptFailed(a, step, st, err.Error(), true, 0)
		return
	}
	if len(creds) > 0 {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		// discovery owns the stored credentials and seals them to the site's bridges for this
		// probe id: the clear secret never reaches this service. A discovery service not
		// running yet (the hub restarting) is waited for, not taken as the step's failure.
		sealed, err := bus.WhenAvailable(rctx, 20*time.Second, func(ctx context.Context) (discoveryapi.SealReply, error) {
			return discoveryapi.CredentialSeal.Call(ctx, s.deps.NC,
				discoveryapi.SealRequest{Site: site, Kind: step.Kind, Probe: p.ID, Names: creds, Target: target})
		})
		if err != nil {
			var se *bus.ServiceError
			s.attemptFailed(a, step, st, "credentials: "+err.Error(), errors.As(err, &se) && se.Code == 400, 0)
			return
		}
		p.Credentials, p.Secrets = creds, sealed.Secrets
		if sealed.KnownHostKey != "" {
			// the hub's known-hosts table holds for workflow steps too
			m := map[string]any{}
			_ = json.Unmarshal(p.Params, &m)
			if _, pinned := m["host_key"]; !pinned {
				m["known_host_key"] = sealed.KnownHostKey
				p.Params, _ = json.Marshal(m)
			}
		}
	}
	ttl := time.Until(p.Deadline)
	if ttl < time.Second {
		s.attemptFailed(a, step, st, fmt.Sprintf("probe %s: its deadline already passed", p.ID), false, 0)
		return
	}
	subject, err := bus.ProbeRoute(ctx, s.deps.JS, s.pub, p)
	if err != nil {
		s.attemptFailed(a, step, st, err.Error(), true, 0)
		return
	}
	msg, span, err := s.pub.Message(ctx, subject, envelope.Meta{ID: p.ID, Run: p.Run}, p)
	if err != nil {
		s.attemptFailed(a, step, st, "probe: "+err.Error(), true, 0)
		return
	}
	span.End()
	// the bridge and NATS drop a probe whose deadline passed before it ran
	msg.Header.Set("Nats-TTL", ttl.Round(time.Second).String())
	a.queued[att.Key] = true
	a.outgoing = append(a.outgoing, outgoing{step: st.ID, key: att.Key, msg: msg, probe: p})
}

// flush sends the probes the advance queued: first their attempts go on record (one
// append of the run, in the journal's batch with other runs'), then the probes go out
// together and their acks are checked together. It reports whether a step changed
// (a probe that could not be recorded or sent fails its attempt). Caller holds a.mu.
func (s *service) flush(ctx context.Context, wg *sync.WaitGroup, a *active) bool {
	if len(a.outgoing) == 0 && len(a.spawns) == 0 {
		return false
	}
	out := a.outgoing
	a.outgoing = nil
	defer clear(a.queued)
	fail := func(key, msg string) {
		st := currentAttempt(a.run, key)
		if st == nil {
			return
		}
		s.attemptFailed(a, a.step(st.ID), st, msg, false, 0)
	}
	// the attempts are on record before their probes (or child runs) exist: a result
	// always finds its attempt, and a restart knows what may have left
	if err := s.save(ctx, a); err != nil {
		if a.fenced {
			return false
		}
		for _, o := range out {
			fail(o.key, "cannot record the attempt: "+err.Error())
		}
		for _, sp := range a.spawns {
			delete(a.children, sp.key)
			fail(sp.key, "cannot record the attempt: "+err.Error())
		}
		a.spawns = nil
		return true
	}
	if s.crashPoint != nil && len(a.spawns) > 0 {
		s.crashPoint(ctx, "child-recorded")
		if ctx.Err() != nil {
			return false
		}
	}
	s.startChildren(ctx, wg, a)
	if len(out) == 0 {
		return true
	}
	if s.crashPoint != nil {
		s.crashPoint(ctx, "probe-recorded")
		if ctx.Err() != nil {
			return false
		}
	}
	msgs := make([]*nats.Msg, len(out))
	for i, o := range out {
		msgs[i] = o.msg
	}
	errs := s.journal.publishAll(msgs)
	if s.crashPoint != nil {
		s.crashPoint(ctx, "probe-published")
		if ctx.Err() != nil {
			return false
		}
	}
	now := s.now()
	for i, o := range out {
		if errs[i] != nil {
			fail(o.key, "send probe: "+errs[i].Error())
			continue
		}
		// recorded as sent by the run's next save: a resume only awaits it
		if st := currentAttempt(a.run, o.key); st != nil {
			st.Attempts[len(st.Attempts)-1].Sent = &now
		}
		s.log.Debug("step dispatched", "run", a.run.ID, "step", o.step, "probe", o.key, "site", o.probe.Site, "kind", o.probe.Kind)
	}
	return true
}

// handleResult takes a probe's final result for the attempt in flight with its id; any
// other (a late result of a timed-out attempt, a redelivery) is acknowledged and dropped.
func (s *service) handleResult(ctx context.Context, _ envelope.Meta, res *envelope.Result) error {
	if !res.Final {
		return nil // streamed chunks: the final result carries the step's output
	}
	a := s.lookup(res.Run)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	st := currentAttempt(a.run, res.Probe)
	if st == nil || st.State != api.StepRunning {
		a.mu.Unlock()
		return nil
	}
	step := a.step(st.ID)
	att := &st.Attempts[len(st.Attempts)-1]
	att.Agent = res.Agent
	s.applyResult(ctx, a, step, st, res)
	// the run's goroutine advances the run and records the result together with what it
	// started next, in one append; the result is acknowledged once that is on record
	saved := make(chan error, 1)
	a.waiters = append(a.waiters, saved)
	a.mu.Unlock()
	a.wake()
	select {
	case err := <-saved:
		return err // an error: redelivered; the attempt is still in flight in the run's history
	case <-ctx.Done():
		return ctx.Err()
	}
}

// applyResult decides what a final result means for the step. A probe that ran is a
// success unless its kind says otherwise: an http_request answered 4xx/5xx failed (429
// and 5xx may be retried, after Retry-After when the server gave one).
func (s *service) applyResult(ctx context.Context, a *active, step api.Step, st *api.StepRun, res *envelope.Result) {
	switch res.Status {
	case envelope.StatusOK, envelope.StatusPartial:
	default:
		msg := string(res.Status)
		if res.Error != nil {
			msg = res.Error.Code + ": " + res.Error.Message
		}
		// denied (outside the site's scope, a credential type refused) will be again
		s.attemptFailed(a, step, st, msg, res.Status == envelope.StatusDenied, 0)
		return
	}
	output := res.Data
	switch step.Kind {
	case httprequest.Kind:
		var hr httprequest.Result
		if err := json.Unmarshal(res.Data, &hr); err == nil && hr.Status >= 400 {
			retryable := hr.Status == 429 || hr.Status >= 500
			s.attemptFailed(a, step, st, fmt.Sprintf("HTTP %d %s from %s", hr.Status, hr.StatusText, hr.URL), !retryable, retryAfter(hr.Headers, s.now()))
			return
		}
	case sshexec.Kind:
		// exit_code: the first non-zero exit of the commands (0 when all succeeded), for
		// if: conditions such as steps.check.output.exit_code != 0
		var sr sshexec.Result
		if err := json.Unmarshal(res.Data, &sr); err == nil {
			code := 0
			for _, o := range sr.Outputs {
				if o.ExitCode != nil && *o.ExitCode != 0 {
					code = *o.ExitCode
					break
				}
			}
			m := map[string]any{}
			if json.Unmarshal(res.Data, &m) == nil {
				m["exit_code"] = code
				output, _ = json.Marshal(m)
			}
		}
	}
	s.attemptSucceeded(st, s.keepOutput(ctx, st.Attempts[len(st.Attempts)-1].Key, output))
}

// retryAfter reads a Retry-After header (seconds or an HTTP date).
func retryAfter(h map[string][]string, now time.Time) time.Duration {
	for k, v := range h {
		if !strings.EqualFold(k, "Retry-After") || len(v) == 0 {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(v[0])); err == nil && n >= 0 {
			return min(time.Duration(n)*time.Second, time.Hour)
		}
		if t, err := time.Parse(time.RFC1123, v[0]); err == nil && t.After(now) {
			return min(t.Sub(now), time.Hour)
		}
	}
	return 0
}
