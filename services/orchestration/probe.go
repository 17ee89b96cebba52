package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
	"github.com/outpost-dev/outpost/libs/probes/httprequest"
	"github.com/outpost-dev/outpost/libs/probes/sshexec"
)

// dispatchProbe renders the step, writes the run (with the attempt) to KV, then publishes
// the probe once. Its id is the attempt's idempotency key: JetStream drops a second publish
// of the same id, and a result is taken only for the attempt still in flight with that id.
// After a restart the attempt is not sent again: its result is awaited until its deadline.
func (s *service) dispatchProbe(ctx context.Context, a *active, step api.Step, st *api.StepRun, env map[string]any) {
	r := a.run
	att := &st.Attempts[len(st.Attempts)-1]
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
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if len(creds) > 0 {
		// discovery owns the stored credentials and seals them to the site's bridges for this
		// probe id: the clear secret never reaches this service
		sealed, err := discoveryapi.CredentialSeal.Call(rctx, s.deps.NC,
			discoveryapi.SealRequest{Site: site, Kind: step.Kind, Probe: p.ID, Names: creds, Target: target})
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
	// the attempt is on record before the probe exists: its result always finds it
	if err := s.save(ctx, a); err != nil {
		if a.fenced {
			return
		}
		s.attemptFailed(a, step, st, "cannot record the attempt: "+err.Error(), false, 0)
		return
	}
	if s.crashPoint != nil {
		s.crashPoint(ctx, "probe-recorded")
		if ctx.Err() != nil {
			return
		}
	}
	if err := bus.PublishProbe(rctx, s.deps.JS, s.pub, p); err != nil {
		s.attemptFailed(a, step, st, "send probe: "+err.Error(), false, 0)
		return
	}
	if s.crashPoint != nil {
		s.crashPoint(ctx, "probe-published")
		if ctx.Err() != nil {
			return
		}
	}
	// on record too: a resume only awaits it
	now := s.now()
	att.Sent = &now
	if err := s.save(ctx, a); err != nil {
		s.log.Warn("record the attempt as sent", "run", r.ID, "step", step.ID, "err", err)
	}
	s.log.Info("step dispatched", "run", r.ID, "step", step.ID, "attempt", att.N, "probe", p.ID, "site", site, "kind", step.Kind)
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
	defer a.mu.Unlock()
	st := currentAttempt(a.run, res.Probe)
	if st == nil || st.State != api.StepRunning {
		return nil
	}
	step := a.step(st.ID)
	att := &st.Attempts[len(st.Attempts)-1]
	att.Agent = res.Agent
	s.applyResult(ctx, a, step, st, res)
	if err := s.save(ctx, a); err != nil {
		return err // redelivered; the attempt is still in flight in the run's history
	}
	a.wake()
	return nil
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
