package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// A run advances by looking at every step in a topological order, as often as something
// changed:
//
//	pending   → its needs are all done: if: decides → the first attempt starts (or skipped)
//	running   → an attempt is in flight: its result, a timeout, or (built-ins) a restart ends it
//	retrying  → the next attempt starts at NextAt
//	waiting   → approval (the operator's decision) or wait (NextAt)
//	succeeded | failed | skipped | canceled: done
//
// A failed step with on_failure: fail fails the run (steps not started are skipped, steps in
// flight canceled); with continue, its dependents run as if it had succeeded.

func terminal(state string) bool {
	switch state {
	case api.StepSucceeded, api.StepFailed, api.StepSkipped, api.StepCanceled:
		return true
	}
	return false
}

// step is the definition of a step, of the for_each step an item (<id>.<index>) is of, or
// of a compensating step (<step>:<id>).
func (a *active) step(id string) api.Step {
	if strings.IndexByte(id, ':') >= 0 {
		return a.wf.comp[id]
	}
	if i := strings.IndexByte(id, '.'); i >= 0 {
		id = id[:i]
	}
	return a.wf.Steps[a.wf.index[id]]
}

// advance moves the run as far as it can now and returns when it must look again (zero:
// only when woken). Caller holds a.mu.
func (s *service) advance(ctx context.Context, wg *sync.WaitGroup, a *active) time.Time {
	r := a.run
	if r.Done() {
		return time.Time{}
	}
	defer func() {
		if err := s.saveRun(ctx, a, true); err != nil {
			s.log.Warn("save run", "run", r.ID, "err", err)
		}
	}()
	if r.CancelRequested {
		s.finishRun(a, api.RunCanceled, "canceled by an operator")
		return time.Time{}
	}
	var next time.Time
	soon := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for progress := true; progress && !r.Done() && ctx.Err() == nil && !a.fenced; {
		progress = false
		now := s.now()
		for _, id := range a.wf.order {
			step := a.step(id)
			if r.Step(id).State == api.StepPending {
				ready, skip := s.ready(a, step)
				if !ready {
					continue
				}
				progress = true
				st := r.Step(id)
				st.Started = &now
				if skip != "" {
					s.endStep(st, api.StepSkipped, skip, nil)
					continue
				}
				if step.If != "" {
					ok, err := condition(step.If, s.runEnv(ctx, a))
					if err != nil {
						s.endStep(st, api.StepFailed, "if: "+err.Error(), nil)
						continue
					}
					if !ok {
						s.endStep(st, api.StepSkipped, "if was false", nil)
						continue
					}
				}
				if step.ForEach != "" {
					s.expand(ctx, a, step, st)
					continue
				}
				s.startAttempt(ctx, wg, a, step, st)
				continue
			}
			if step.ForEach != "" {
				if s.advanceItems(ctx, wg, a, step, now, soon) {
					progress = true
				}
				continue
			}
			if s.advanceStep(ctx, wg, a, step, r.Step(id), now, soon) {
				progress = true
			}
		}
		if s.advanceCompensations(ctx, wg, a, now, soon) {
			progress = true
		}
		if s.flush(ctx, wg, a) {
			progress = true
		}
		if s.settle(ctx, a) {
			progress = true
		}
	}
	return next
}

// advanceStep moves a step (or an item of a for_each) that has started: its attempt's
// deadline, a probe recorded but not sent, a built-in interrupted by a restart, the end of
// a wait, the next attempt. It reports whether anything changed.
func (s *service) advanceStep(ctx context.Context, wg *sync.WaitGroup, a *active, step api.Step, st *api.StepRun, now time.Time, soon func(time.Time)) bool {
	switch st.State {
	case api.StepRunning, api.StepWaiting:
		att := &st.Attempts[len(st.Attempts)-1]
		if att.Deadline != nil && !now.Before(*att.Deadline) {
			att.State = "timeout"
			s.attemptFailed(a, step, st, fmt.Sprintf("attempt %d timed out after %s", att.N, a.wf.timeouts[step.ID]), false, 0)
			return true
		}
		if st.State == api.StepRunning && step.Kind == api.KindWorkflow {
			if s.checkChild(ctx, a, step, st) {
				return true
			}
		} else if st.State == api.StepRunning && !isBuiltin(step.Kind) && att.Sent == nil {
			// recorded, not sent: the service stopped in between (a resend of the same probe
			// id is dropped by JetStream or by the bridge if it did leave)
			s.log.Info("sending the probe of an attempt recorded before a restart", "run", a.run.ID, "step", st.ID, "attempt", att.N)
			s.dispatchProbe(ctx, a, step, st, s.envFor(ctx, a, st))
			// no progress when it could not go (stopping, fenced): no busy loop
			return ctx.Err() == nil && !a.fenced && (att.Sent != nil || st.State != api.StepRunning)
		}
		if st.State == api.StepRunning && isBuiltin(step.Kind) && !a.inflight[att.Key] {
			s.attemptFailed(a, step, st, fmt.Sprintf("attempt %d was interrupted: the orchestration service restarted while it ran", att.N), false, 0)
			return true
		}
		if st.State == api.StepWaiting && step.Kind == api.KindWait && st.NextAt != nil {
			if !now.Before(*st.NextAt) {
				att.State = api.StepSucceeded
				att.Finished = &now
				st.NextAt = nil
				s.endStep(st, api.StepSucceeded, "", json.RawMessage(`{}`))
				return true
			}
			soon(*st.NextAt)
		}
		if att.Deadline != nil {
			soon(*att.Deadline)
		}
	case api.StepRetrying:
		if st.NextAt != nil && now.Before(*st.NextAt) {
			soon(*st.NextAt)
			return false
		}
		st.NextAt = nil
		s.startAttempt(ctx, wg, a, step, st)
		return true
	}
	return false
}

// maxItems bounds a for_each: every item is a step of the run's state.
const maxItems = 10_000

// expand turns a for_each step into its items (caller holds a.mu; st is invalid after).
func (s *service) expand(ctx context.Context, a *active, step api.Step, st *api.StepRun) {
	r := a.run
	v, err := render(step.ForEach, s.runEnv(ctx, a))
	if err != nil {
		s.endStep(st, api.StepFailed, "for_each: "+err.Error(), nil)
		return
	}
	list, ok := v.([]any)
	if !ok {
		if ss, isStrings := v.([]string); isStrings {
			for _, x := range ss {
				list = append(list, x)
			}
			ok = true
		}
	}
	switch {
	case !ok:
		s.endStep(st, api.StepFailed, fmt.Sprintf("for_each: want a list, the expression gave %T", v), nil)
		return
	case len(list) > maxItems:
		s.endStep(st, api.StepFailed, fmt.Sprintf("for_each: %d items, more than the %d a run takes: split the list", len(list), maxItems), nil)
		return
	case len(list) == 0:
		s.endStep(st, api.StepSucceeded, "no items", json.RawMessage(`[]`))
		return
	}
	st.State, st.Items = api.StepRunning, len(list)
	id := step.ID
	for i, item := range list {
		r.Steps = append(r.Steps, api.StepRun{ID: itemID(id, i), Kind: step.Kind, State: api.StepPending, Parent: id, Index: i, Item: item})
	}
	a.items = nil // the index of items is rebuilt
	s.log.Info("for_each expanded", "run", r.ID, "step", id, "items", len(list))
}

func itemID(step string, i int) string { return fmt.Sprintf("%s.%d", step, i) }

// itemsOf returns the indexes in run.Steps of a for_each step's items.
func (a *active) itemsOf(id string) []int {
	if a.items == nil {
		a.items = map[string][]int{}
		for i := range a.run.Steps {
			if p := a.run.Steps[i].Parent; p != "" {
				a.items[p] = append(a.items[p], i)
			}
		}
	}
	return a.items[id]
}

// advanceItems runs a for_each step's items, at most its concurrency at a time, and ends
// the step once every item is done.
func (s *service) advanceItems(ctx context.Context, wg *sync.WaitGroup, a *active, step api.Step, now time.Time, soon func(time.Time)) bool {
	parent := a.run.Step(step.ID)
	if parent.State != api.StepRunning {
		return false
	}
	limit := step.Concurrency
	if limit <= 0 {
		limit = defaultConcurrency
	}
	progress := false
	idx := a.itemsOf(step.ID)
	inflight, done := 0, 0
	for _, i := range idx {
		st := &a.run.Steps[i]
		if terminal(st.State) {
			done++
			continue
		}
		if st.State != api.StepPending {
			if s.advanceStep(ctx, wg, a, step, st, now, soon) {
				progress = true
			}
			if terminal(st.State) {
				done++
			} else {
				inflight++
			}
		}
	}
	for _, i := range idx {
		if inflight >= limit {
			break
		}
		st := &a.run.Steps[i]
		if st.State != api.StepPending {
			continue
		}
		st.Started = &now
		s.startAttempt(ctx, wg, a, step, st)
		progress = true
		if terminal(st.State) {
			done++
		} else {
			inflight++
		}
	}
	if done < len(idx) {
		return progress
	}
	outs := make([]json.RawMessage, len(idx))
	failed := 0
	first := ""
	for j, i := range idx {
		st := &a.run.Steps[i]
		outs[j] = json.RawMessage("null")
		if st.State == api.StepSucceeded && len(st.Output) > 0 {
			outs[j] = st.Output
		}
		if st.State == api.StepFailed {
			failed++
			if first == "" {
				first = fmt.Sprintf("%s: %s", st.ID, st.Reason)
			}
		}
	}
	b, _ := json.Marshal(outs)
	parent = a.run.Step(step.ID)
	if failed > 0 && !step.OnFailure.Continue() {
		s.endStep(parent, api.StepFailed, fmt.Sprintf("%d of %d items failed (first %s)", failed, len(idx), first), nil)
		return true
	}
	reason := ""
	if failed > 0 {
		reason = fmt.Sprintf("%d of %d items failed (first %s)", failed, len(idx), first)
	}
	s.endStep(parent, api.StepSucceeded, reason, s.keepOutput(ctx, attemptKey(a.run.ID, step.ID, 1), b))
	return true
}

// runEnv is what the run's expressions see now, large outputs fetched.
func (s *service) runEnv(ctx context.Context, a *active) map[string]any {
	return runEnv(a.run, s.now, s.resolver(ctx, a))
}

// defaultConcurrency is a for_each's concurrency when the step sets none.
const defaultConcurrency = 10

// envFor is what a step's (or an item's) expressions see now.
func (s *service) envFor(ctx context.Context, a *active, st *api.StepRun) map[string]any {
	env := s.runEnv(ctx, a)
	if st.Parent != "" {
		env["item"], env["index"] = st.Item, st.Index
	}
	return env
}

// ready reports whether a pending step's needs are all done, and a reason to skip it when
// one of them was skipped or canceled.
func (s *service) ready(a *active, step api.Step) (bool, string) {
	skip := ""
	for _, n := range step.Needs {
		ns := a.run.Step(n)
		switch ns.State {
		case api.StepSucceeded:
		case api.StepFailed:
			if !a.step(n).OnFailure.Continue() {
				return false, "" // the run fails
			}
		case api.StepSkipped, api.StepCanceled:
			if skip == "" {
				skip = fmt.Sprintf("needs %s, which was %s", n, ns.State)
			}
		default:
			return false, ""
		}
	}
	return true, skip
}

// settle ends the run when a step failed it or every step is done. A failed step with
// compensating steps first gets them: the rest of the run stops (steps not started are
// skipped, steps in flight canceled), the compensations run one after another, and the run
// fails once they are all done.
// It reports whether compensations were added (they are to start).
func (s *service) settle(ctx context.Context, a *active) bool {
	r := a.run
	if r.Done() {
		return false
	}
	all := true
	for i := range r.Steps {
		st := &r.Steps[i]
		if st.State == api.StepFailed && st.Parent == "" && st.Compensates == "" && !a.step(st.ID).OnFailure.Continue() {
			reason := fmt.Sprintf("step %s failed: %s", st.ID, st.Reason)
			if comps := a.wf.compensations[st.ID]; len(comps) > 0 {
				added := r.Step(comps[0].ID) == nil
				if !s.compensating(a, st.ID, comps) {
					return added // compensations still to run
				}
				reason += "; " + compensationSummary(r, st.ID)
			}
			s.finishRun(a, api.RunFailed, reason)
			return false
		}
		if !terminal(st.State) {
			all = false
		}
	}
	if all {
		s.completeRun(ctx, a)
	}
	return false
}

// compensating adds a failed step's compensating steps to the run the first time (and
// stops the rest of the run), and reports whether they are all done.
func (s *service) compensating(a *active, failed string, comps []api.Step) bool {
	r := a.run
	if r.Step(comps[0].ID) == nil {
		now := s.now()
		for i := range r.Steps {
			st := &r.Steps[i]
			switch st.State {
			case api.StepPending:
				s.endStep(st, api.StepSkipped, fmt.Sprintf("step %s failed before it started", failed), nil)
			case api.StepRunning, api.StepRetrying, api.StepWaiting:
				if n := len(st.Attempts); n > 0 && st.Attempts[n-1].Finished == nil {
					st.Attempts[n-1].State = api.StepCanceled
					st.Attempts[n-1].Finished = &now
				}
				st.NextAt = nil
				s.endStep(st, api.StepCanceled, fmt.Sprintf("step %s failed while it ran", failed), nil)
			}
		}
		for _, c := range comps {
			r.Steps = append(r.Steps, api.StepRun{ID: c.ID, Kind: c.Kind, State: api.StepPending, Compensates: failed})
		}
		a.items = nil
		s.log.Info("step failed: compensating", "run", r.ID, "step", failed, "compensations", len(comps))
		return false
	}
	for _, c := range comps {
		if !terminal(r.Step(c.ID).State) {
			return false
		}
	}
	return true
}

// compensationSummary says how a step's compensations went.
func compensationSummary(r *api.Run, failed string) string {
	var ok, bad []string
	for _, st := range r.Steps {
		if st.Compensates != failed {
			continue
		}
		if st.State == api.StepSucceeded || st.State == api.StepSkipped {
			ok = append(ok, st.ID)
		} else {
			bad = append(bad, fmt.Sprintf("%s %s (%s)", st.ID, st.State, st.Reason))
		}
	}
	if len(bad) == 0 {
		return "compensated by " + strings.Join(ok, ", ")
	}
	return "compensation failed: " + strings.Join(bad, "; ")
}

// advanceCompensations runs the compensating steps in the run, one after another in the
// order listed (each whatever the one before it did).
func (s *service) advanceCompensations(ctx context.Context, wg *sync.WaitGroup, a *active, now time.Time, soon func(time.Time)) bool {
	progress := false
	r := a.run
	for i := 0; i < len(r.Steps); i++ {
		st := &r.Steps[i]
		if st.Compensates == "" || terminal(st.State) {
			continue
		}
		step := a.step(st.ID)
		if st.State != api.StepPending {
			if s.advanceStep(ctx, wg, a, step, st, now, soon) {
				progress = true
			}
			if !terminal(r.Steps[i].State) {
				return progress // the next waits for this one
			}
			continue
		}
		progress = true
		st.Started = &now
		if step.If != "" {
			ok, err := condition(step.If, s.runEnv(ctx, a))
			if err != nil {
				s.endStep(st, api.StepFailed, "if: "+err.Error(), nil)
				continue
			}
			if !ok {
				s.endStep(st, api.StepSkipped, "if was false", nil)
				continue
			}
		}
		s.startAttempt(ctx, wg, a, step, st)
		if !terminal(r.Steps[i].State) {
			return progress
		}
	}
	return progress
}

// completeRun ends the run as completed, with the definition's outputs evaluated (an output
// whose expression fails is an error message in its place and a warning: the steps did run).
func (s *service) completeRun(ctx context.Context, a *active) {
	if len(a.wf.Outputs) > 0 {
		env := s.runEnv(ctx, a)
		a.run.Outputs = map[string]any{}
		for name, e := range a.wf.Outputs {
			v, err := render(e, env)
			if err != nil {
				s.log.Warn("run output", "run", a.run.ID, "output", name, "err", err)
				v = map[string]any{"error": err.Error()}
			}
			a.run.Outputs[name] = v
		}
	}
	s.finishRun(a, api.RunCompleted, "")
}

// finishRun ends the run: steps not started are skipped, steps in flight canceled (a late
// result is then not taken for them).
func (s *service) finishRun(a *active, state, reason string) {
	r := a.run
	now := s.now()
	for i := range r.Steps {
		st := &r.Steps[i]
		switch st.State {
		case api.StepPending:
			s.endStep(st, api.StepSkipped, "the run was "+state+" before it started", nil)
		case api.StepRunning, api.StepRetrying, api.StepWaiting:
			if n := len(st.Attempts); n > 0 && st.Attempts[n-1].Finished == nil {
				st.Attempts[n-1].State = api.StepCanceled
				st.Attempts[n-1].Finished = &now
			}
			st.NextAt = nil
			s.endStep(st, api.StepCanceled, "the run was "+state+" while it ran", nil)
		}
	}
	r.State, r.Reason = state, reason
	r.Finished = &now
	s.log.Info("run finished", "run", r.ID, "workflow", r.Workflow, "version", r.Version, "state", state, "reason", reason)
}

func (s *service) endStep(st *api.StepRun, state, reason string, output json.RawMessage) {
	now := s.now()
	st.State, st.Reason = state, reason
	if output != nil {
		st.Output = output
	}
	st.Finished = &now
}

// startAttempt begins the step's next attempt (caller holds a.mu).
func (s *service) startAttempt(ctx context.Context, wg *sync.WaitGroup, a *active, step api.Step, st *api.StepRun) {
	r := a.run
	now := s.now()
	n := len(st.Attempts) + 1
	att := api.Attempt{N: n, Key: attemptKey(r.ID, st.ID, n), State: api.StepRunning, Started: now}
	if d := a.wf.timeouts[step.ID]; d > 0 {
		dl := now.Add(d)
		att.Deadline = &dl
	}
	st.Attempts = append(st.Attempts, att)
	st.State = api.StepRunning
	env := s.envFor(ctx, a, st)
	switch step.Kind {
	case api.KindApproval:
		st.State = api.StepWaiting
		s.log.Info("step waits for approval", "run", r.ID, "step", step.ID)
	case api.KindWait:
		v, err := renderString(fmt.Sprint(step.Params["duration"]), env)
		if err != nil {
			s.attemptFailed(a, step, st, "params.duration: "+err.Error(), true, 0)
			return
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			s.attemptFailed(a, step, st, fmt.Sprintf("params.duration %q: want a duration, e.g. 30s", v), true, 0)
			return
		}
		t := now.Add(d)
		st.NextAt = &t
		st.State = api.StepWaiting
	case api.KindCMDBUpdate, api.KindNotify:
		v, err := render(step.Params, env)
		if err != nil {
			s.attemptFailed(a, step, st, "params."+err.Error(), true, 0)
			return
		}
		params, _ := v.(map[string]any)
		a.inflight[att.Key] = true
		timeout := a.wf.timeouts[step.ID]
		wg.Add(1)
		go func() {
			defer wg.Done()
			bctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			var out any
			var err error
			if step.Kind == api.KindCMDBUpdate {
				out, err = s.cmdbUpdate(bctx, r.Workflow, params)
			} else {
				out, err = s.notify(bctx, att.Key, params)
			}
			s.builtinDone(ctx, a, st.ID, att.Key, out, err)
		}()
	case api.KindWorkflow:
		s.startWorkflowStep(a, step, st, env)
	default:
		s.dispatchProbe(ctx, a, step, st, env)
	}
}

// attemptKey is the idempotency key of one attempt: the probe's id for a probe step.
func attemptKey(run, step string, n int) string { return fmt.Sprintf("%s-%s-%d", run, step, n) }

// attemptFailed ends the current attempt as failed and retries the step when its policy
// allows (permanent failures — a bad expression, a refused credential — are not retried).
// retryAfter is the target's own wish (Retry-After), honoured when longer than the backoff.
func (s *service) attemptFailed(a *active, step api.Step, st *api.StepRun, msg string, permanent bool, retryAfter time.Duration) {
	now := s.now()
	att := &st.Attempts[len(st.Attempts)-1]
	if att.State == api.StepRunning {
		att.State = api.StepFailed
	}
	att.Error, att.Finished = msg, &now
	attempts := 1
	if step.Retry != nil {
		attempts = step.Retry.MaxAttempts
	}
	if permanent || att.N >= attempts {
		if att.N > 1 {
			msg = fmt.Sprintf("%s (attempt %d of %d)", msg, att.N, attempts)
		}
		s.endStep(st, api.StepFailed, msg, nil)
		s.log.Info("step failed", "run", a.run.ID, "step", st.ID, "attempt", att.N, "reason", msg)
		return
	}
	wait := max(backoff(step.Retry, att.N), retryAfter)
	t := now.Add(wait)
	st.State, st.NextAt, st.Reason = api.StepRetrying, &t, msg
	s.log.Info("step attempt failed; retrying", "run", a.run.ID, "step", st.ID, "attempt", att.N, "in", wait, "reason", msg)
}

// attemptSucceeded ends the current attempt and the step with its output.
func (s *service) attemptSucceeded(st *api.StepRun, output json.RawMessage) {
	now := s.now()
	att := &st.Attempts[len(st.Attempts)-1]
	att.State, att.Finished = api.StepSucceeded, &now
	st.NextAt = nil
	s.endStep(st, api.StepSucceeded, "", output)
}

// backoff is the wait before attempt n+1.
func backoff(r *api.Retry, n int) time.Duration {
	if r == nil {
		return 0
	}
	initial := time.Second
	if r.Initial != "" {
		initial, _ = time.ParseDuration(r.Initial)
	}
	maxWait := time.Hour
	if r.Max != "" {
		maxWait, _ = time.ParseDuration(r.Max)
	}
	d := initial
	if r.Backoff == "exponential" {
		for i := 1; i < n && d < maxWait; i++ {
			d *= 2
		}
	}
	return min(d, maxWait)
}

// currentAttempt finds the step whose current attempt has key and is still in flight.
func currentAttempt(r *api.Run, key string) *api.StepRun {
	for i := range r.Steps {
		st := &r.Steps[i]
		if n := len(st.Attempts); n > 0 && st.Attempts[n-1].Key == key &&
			(st.State == api.StepRunning || st.State == api.StepWaiting) && st.Attempts[n-1].Finished == nil {
			return st
		}
	}
	return nil
}

// builtinDone records the end of a built-in attempt run in this process.
func (s *service) builtinDone(ctx context.Context, a *active, stepID, key string, out any, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.inflight, key)
	st := currentAttempt(a.run, key)
	if st == nil || st.ID != stepID {
		return // canceled or timed out meanwhile
	}
	step := a.step(stepID)
	if err != nil {
		var pe *permanentError
		s.attemptFailed(a, step, st, err.Error(), errors.As(err, &pe), 0)
	} else {
		b, _ := json.Marshal(out)
		s.attemptSucceeded(st, s.keepOutput(ctx, key, b))
	}
	if err := s.save(ctx, a); err != nil {
		s.log.Warn("save run", "run", a.run.ID, "err", err)
	}
	a.wake()
}

func isBuiltin(kind string) bool {
	return kind == api.KindCMDBUpdate || kind == api.KindNotify || kind == api.KindApproval || kind == api.KindWait
}

// permanentError is a failure that another attempt would repeat (bad params, a refusal).
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

func permanent(format string, args ...any) error {
	return &permanentError{msg: fmt.Sprintf(format, args...)}
}
