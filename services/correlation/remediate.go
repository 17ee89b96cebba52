package correlation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	orch "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
)

// Remediation: an alert that opens and matches a remediate rule starts the rule's
// orchestration workflow (svc.orchestration.run_start) with the alert as input.
//
// The request is part of the alert: the partition writes the alert with a pending
// remediation in the same compare-and-set as the alert itself, so a replica dying before
// the run started leaves it pending in KV, and the partition's next owner starts it (it
// looks for pending remediations when it loads the open alerts). The remediator — one
// goroutine per replica, like the notifier — starts the run, then records the run id (or
// the refusal) in the alert. A crash between the two can start a run twice: run_start
// takes no idempotency key yet, and the window is one request long.
type remediator struct {
	s *service
	q chan string // slots with a pending remediation

	Started, Failed atomic.Int64
}

func newRemediator(s *service) *remediator {
	return &remediator{s: s, q: make(chan string, 4096)}
}

// request adds a pending remediation for each matching rule of a newly opened alert.
func (r *remediator) request(a *api.Alert) {
	for _, rule := range r.s.rules.remediate {
		if rule.match.matches(a.Field) {
			a.Remediations = append(a.Remediations, api.Remediation{Rule: rule.name, Workflow: rule.workflow, State: api.RemediationPending})
		}
	}
}

func pending(a *api.Alert) bool {
	return a != nil && slices.ContainsFunc(a.Remediations, func(x api.Remediation) bool { return x.State == api.RemediationPending })
}

// enqueue hands a slot to the remediator; a full queue waits (nothing dropped).
func (r *remediator) enqueue(ctx context.Context, slot string) {
	select {
	case r.q <- slot:
	case <-ctx.Done(): // pending in KV: the next owner takes it
	}
}

func (r *remediator) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case slot := <-r.q:
			r.remediate(ctx, slot)
		}
	}
}

// remediate starts the pending remediations of a slot's alert and records the outcome.
func (r *remediator) remediate(ctx context.Context, slot string) {
	a, _, err := r.s.store.get(ctx, slot)
	if err != nil || !pending(a) {
		if err != nil {
			r.s.log.Warn("remediation: cannot read the alert; its next owner retries", "slot", slot, "err", err)
		}
		return
	}
	for _, rem := range a.Remediations {
		if rem.State != api.RemediationPending {
			continue
		}
		out := r.start(ctx, a, rem)
		if ctx.Err() != nil {
			return
		}
		if err := r.record(ctx, slot, a.ID, out); err != nil {
			r.s.log.Error("remediation started but not recorded in the alert", "alert", a.ID, "run", out.Run, "err", err)
		}
	}
}

// start runs the rule's workflow, retrying what a retry can fix; a refusal (bad inputs, no
// such workflow) or giving up is dead-lettered with the reason.
func (r *remediator) start(ctx context.Context, a *api.Alert, rem api.Remediation) api.Remediation {
	i := slices.IndexFunc(r.s.rules.remediate, func(x remediateRule) bool { return x.name == rem.Rule })
	if i < 0 {
		rem.State, rem.Error = api.RemediationFailed, "no remediate rule "+rem.Rule+" in the rule files any more"
		return rem
	}
	rule := r.s.rules.remediate[i]
	// the key makes a repeated start (a retry below, a restart before record) return the first run
	req := orch.RunRequest{Name: rule.workflow, RunOptions: orch.RunOptions{Inputs: remediationInputs(rule, a), IdempotencyKey: "alert:" + a.ID + ":" + rule.name}}
	backoff := r.s.cfg.NotifyBackoff
	var err error
	for attempt := 0; attempt <= r.s.cfg.NotifyRetries && ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			sleepReal(ctx, backoff)
			backoff = min(backoff*2, 30*time.Second)
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		run, cerr := orch.RunStart.Call(cctx, r.s.deps.NC, req)
		cancel()
		if err = cerr; err == nil {
			r.Started.Add(1)
			r.s.log.Info("remediation started", "alert", a.ID, "rule", rule.name, "workflow", rule.workflow, "run", run.ID)
			rem.State, rem.Run = api.RemediationStarted, run.ID
			return rem
		}
		var se *bus.ServiceError
		if errors.As(err, &se) && se.Code < 500 {
			break // refused: retrying the same request cannot help
		}
		r.s.log.Warn("remediation not started; retrying", "alert", a.ID, "workflow", rule.workflow, "attempt", attempt+1, "err", err)
	}
	if ctx.Err() != nil {
		return rem
	}
	r.Failed.Add(1)
	rem.State, rem.Error = api.RemediationFailed, fmt.Sprintf("workflow %s: %v", rule.workflow, err)
	b, _ := json.Marshal(req)
	if derr := r.s.dlq.DeadLetter(ctx, bus.SourceRef{Stream: "remediations", Consumer: rule.name, Subject: "remediate." + rule.name}, nil, b,
		bus.CodePermanent, "alert "+a.ID+": "+rem.Error); derr != nil {
		r.s.log.Error("remediation failed and not dead-lettered", "alert", a.ID, "err", err, "dlq_err", derr)
	}
	return rem
}

// record writes a remediation's outcome into its alert (compare-and-set; the partition may
// be writing the same alert).
func (r *remediator) record(ctx context.Context, slot, id string, out api.Remediation) error {
	for attempt := 0; attempt < 10; attempt++ {
		a, rev, err := r.s.store.get(ctx, slot)
		if err != nil {
			return err
		}
		if a == nil || a.ID != id {
			return nil // replaced by a newer alert of its key; the closed one was archived
		}
		n := *a
		n.Remediations = slices.Clone(a.Remediations)
		for i := range n.Remediations {
			if n.Remediations[i].Rule == out.Rule && n.Remediations[i].State == api.RemediationPending {
				n.Remediations[i] = out
			}
		}
		if _, err := r.s.store.put(ctx, slot, &n, rev); errors.Is(err, errConflict) {
			continue
		} else if err != nil {
			return err
		}
		return nil
	}
	return errors.New("the alert changed under every one of 10 writes")
}

// remediationInputs are the run's inputs: the rule's templates over the alert ({node},
// {severity}, {id}, {alert}: the alert as JSON…), or the alert as JSON in "alert".
func remediationInputs(rule remediateRule, a *api.Alert) map[string]any {
	b, _ := json.Marshal(a)
	get := func(k string) string {
		switch k {
		case "id":
			return a.ID
		case "alert":
			return string(b)
		case "message":
			return a.Message
		case "count":
			return fmt.Sprint(a.Count)
		}
		return a.Field(k)
	}
	if rule.inputs == nil {
		return map[string]any{"alert": string(b)}
	}
	out := make(map[string]any, len(rule.inputs))
	for k, tmpl := range rule.inputs {
		out[k] = templateRef.ReplaceAllStringFunc(tmpl, func(ref string) string { return get(ref[1 : len(ref)-1]) })
	}
	return out
}
