package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// A workflow step runs another definition as a child run. The child's id is chosen and
// recorded in the parent's attempt (Attempt.Child) before the child starts, as a probe
// attempt is recorded before its probe leaves: a parent resumed after a crash finds its
// child, or starts it with that id if it never did (a run's first record expects an empty
// history, so a child cannot start twice). The child links back (Run.Parent); when it ends
// it hands its outcome to the parent's attempt, which a resumed parent also reads from the
// child's record. When the parent's attempt ends otherwise — the run canceled or failed,
// the step timed out — the child is canceled.

// spawn is a child run to start once the parent's attempt naming it is on record.
type spawn struct {
	key, child string
	req        api.RunRequest
}

// childRequest renders a workflow step's params into the child's run request.
func childRequest(step api.Step, env map[string]any) (api.RunRequest, error) {
	v, err := render(step.Params, env)
	if err != nil {
		return api.RunRequest{}, &permanentError{msg: "params." + err.Error()}
	}
	params, _ := v.(map[string]any)
	req := api.RunRequest{}
	req.Name, _ = params["workflow"].(string)
	switch n := params["version"].(type) {
	case int:
		req.Version = n
	case float64:
		req.Version = int(n)
	}
	if in, ok := params["inputs"].(map[string]any); ok {
		req.Inputs = in
	}
	if !bus.ValidName(req.Name) {
		return req, permanent("params.workflow %q is not a workflow name", req.Name)
	}
	return req, nil
}

// startWorkflowStep begins a workflow step's attempt: the child is started by flush once
// the attempt, naming it, is on record.
func (s *service) startWorkflowStep(a *active, step api.Step, st *api.StepRun, env map[string]any) {
	att := &st.Attempts[len(st.Attempts)-1]
	req, err := childRequest(step, env)
	if err != nil {
		var pe *permanentError
		s.attemptFailed(a, step, st, err.Error(), errors.As(err, &pe), 0)
		return
	}
	att.Child = envelope.NewID()
	a.children[att.Key] = att.Child
	a.watching[att.Key] = true
	a.spawns = append(a.spawns, spawn{key: att.Key, child: att.Child, req: req})
}

// startChildren starts the children the advance recorded (caller holds a.mu, the run's
// attempts are on record).
func (s *service) startChildren(ctx context.Context, wg *sync.WaitGroup, a *active) bool {
	if len(a.spawns) == 0 {
		return false
	}
	spawns := a.spawns
	a.spawns = nil
	for _, sp := range spawns {
		st := currentAttempt(a.run, sp.key)
		if st == nil {
			continue
		}
		link := &api.RunLink{Run: a.run.ID, Step: st.ID, Attempt: sp.key}
		trig := &api.Trigger{Kind: "workflow", Event: a.run.ID, Detail: fmt.Sprintf("step %s of run %s (%s)", st.ID, a.run.ID, a.run.Workflow)}
		if _, err := s.startRunAs(ctx, ctx, wg, sp.req, sp.child, link, trig); err != nil && !errors.Is(err, errStartedAlready) {
			var se *bus.ServiceError
			permanent := errors.As(err, &se) && se.Code >= 400 && se.Code < 500
			delete(a.children, sp.key)
			s.attemptFailed(a, a.step(st.ID), st, fmt.Sprintf("start sub-workflow %s: %v", sp.req.Name, err), permanent, 0)
		}
	}
	return true
}

// errStartedAlready: a child run with that id is on record (a resumed parent restarting it).
var errStartedAlready = errors.New("the run has started already")

// checkChild looks, once per attempt after a resume, at a workflow step's child: it waits
// for it, takes its outcome when it ended meanwhile, or starts it when it never started.
func (s *service) checkChild(ctx context.Context, a *active, step api.Step, st *api.StepRun) bool {
	att := &st.Attempts[len(st.Attempts)-1]
	if a.watching[att.Key] || att.Child == "" {
		return false
	}
	a.watching[att.Key] = true
	a.children[att.Key] = att.Child
	if s.lookup(att.Child) != nil {
		return false // running here: it reports when it ends
	}
	child, err := s.load(ctx, att.Child)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		req, err := childRequest(step, s.envFor(ctx, a, st))
		if err != nil {
			s.attemptFailed(a, step, st, err.Error(), true, 0)
			return true
		}
		s.log.Info("starting the sub-workflow of an attempt recorded before a restart", "run", a.run.ID, "step", st.ID, "child", att.Child)
		a.spawns = append(a.spawns, spawn{key: att.Key, child: att.Child, req: req})
		return true
	}
	if err != nil {
		s.log.Warn("read a sub-workflow run", "run", a.run.ID, "child", att.Child, "err", err)
		return false
	}
	if child.Done() {
		s.takeChild(a, st, child)
		return true
	}
	return false
}

// takeChild ends a workflow step's attempt with its child's outcome (caller holds a.mu).
func (s *service) takeChild(a *active, st *api.StepRun, child *api.Run) {
	att := &st.Attempts[len(st.Attempts)-1]
	delete(a.children, att.Key)
	step := a.step(st.ID)
	if child.State != api.RunCompleted {
		s.attemptFailed(a, step, st, fmt.Sprintf("sub-workflow %s run %s %s: %s", child.Workflow, child.ID, child.State, child.Reason), false, 0)
		return
	}
	outputs := child.Outputs
	if outputs == nil {
		outputs = map[string]any{}
	}
	b, _ := json.Marshal(map[string]any{"run": child.ID, "workflow": child.Workflow, "version": child.Version, "outputs": outputs})
	s.attemptSucceeded(st, b)
}

// childDone hands a finished child run's outcome to its parent's attempt, if the parent
// still waits for it (called without any run's lock).
func (s *service) childDone(ctx context.Context, child *api.Run) {
	p := s.lookup(child.Parent.Run)
	if p == nil {
		return // the parent reads the child's record when it resumes
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := currentAttempt(p.run, child.Parent.Attempt)
	if st == nil || st.Kind != api.KindWorkflow {
		return // it moved on (timed out, canceled)
	}
	s.takeChild(p, st, child)
	if err := s.save(ctx, p); err != nil {
		s.log.Warn("save run", "run", p.run.ID, "err", err)
	}
	p.wake()
}

// orphans are children whose parent attempt ended otherwise than by them: canceled. Called
// without the run's lock; the list is taken under it.
func (s *service) orphans(a *active) []string {
	var out []string
	for key, child := range a.children {
		if currentAttempt(a.run, key) == nil {
			out = append(out, child)
			delete(a.children, key)
			delete(a.watching, key)
		}
	}
	return out
}
