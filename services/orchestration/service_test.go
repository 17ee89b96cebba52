package orchestration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// A DAG run on the fake clock: a step that fails twice then succeeds makes three attempts,
// waiting its exponential backoff between them; a step that never answers times out per
// attempt, is retried, fails, and with on_failure: continue lets the run go on; a false
// if: skips a step and its dependents; a wait waits.
func TestRetriesTimeoutsAndConditions(t *testing.T) {
	h := newHarness(t)
	defer h.startService("r1")()
	host, port := h.web.hostPort()
	h.add(fmt.Sprintf(`
name: dag
inputs:
  host: {required: true}
steps:
  - id: flaky
    kind: http_request
    site: lab
    target: '${{ inputs.host }}'
    params: {scheme: http, port: %[1]s, path: /flaky}
    retry: {max_attempts: 3, backoff: exponential, initial: 2s}
  - id: slow
    kind: http_request
    site: lab
    needs: [flaky]
    target: '${{ inputs.host }}'
    params: {scheme: http, port: %[1]s, path: /hang}
    timeout: 5s
    retry: {max_attempts: 2, backoff: fixed, initial: 1s}
    on_failure: continue
  - id: never
    kind: approval
    needs: [flaky]
    if: '${{ steps.flaky.output.status != 200 }}'
  - id: after_never
    kind: approval
    needs: [never]
  - id: pause
    kind: wait
    needs: [slow]
    params: {duration: '${{ "1" + "0s" }}'}
`, port))
	run := h.run("dag", map[string]any{"host": host})

	// flaky: 503, then 2s, 503, then 4s, 200
	r := h.waitStep(run.ID, "flaky", api.StepRetrying, 1)
	h.advance(run.ID, *r.Step("flaky").NextAt, 2*time.Second)
	r = h.waitStep(run.ID, "flaky", api.StepRetrying, 2)
	next := *r.Step("flaky").NextAt
	if wait := next.Sub(*r.Step("flaky").Attempts[1].Finished); wait != 4*time.Second {
		t.Fatalf("the second backoff is %s, want 4s (exponential from 2s)", wait)
	}
	h.advance(run.ID, next, 3*time.Second)
	if g := h.get(run.ID); g.Step("flaky").State != api.StepRetrying || len(g.Step("flaky").Attempts) != 2 {
		t.Fatalf("the third attempt started before its backoff: %+v", g.Step("flaky"))
	}
	h.advance(run.ID, next, time.Second)
	r = h.waitStep(run.ID, "flaky", api.StepSucceeded, 3)
	if n := h.web.count("/flaky"); n != 3 {
		t.Fatalf("/flaky executed %d times, want 3", n)
	}
	for i, a := range r.Step("flaky").Attempts {
		if n := h.ran(a.Key); n != 1 {
			t.Errorf("attempt %d (%s) ran %d times on the bridge", i+1, a.Key, n)
		}
	}
	if st := r.Step("never"); st.State != api.StepSkipped || st.Reason != "if was false" {
		t.Errorf("never: %s %q", st.State, st.Reason)
	}
	if st := r.Step("after_never"); st.State != api.StepSkipped || !strings.Contains(st.Reason, "needs never, which was skipped") {
		t.Errorf("after_never: %s %q", st.State, st.Reason)
	}

	// slow: two attempts that time out after 5s each, 1s apart; then it failed, and the run goes on
	r = h.waitStep(run.ID, "slow", api.StepRunning, 1)
	h.advance(run.ID, *r.Step("slow").Attempts[0].Deadline, 5*time.Second)
	r = h.waitStep(run.ID, "slow", api.StepRetrying, 1)
	h.advance(run.ID, *r.Step("slow").NextAt, time.Second)
	r = h.waitStep(run.ID, "slow", api.StepRunning, 2)
	h.advance(run.ID, *r.Step("slow").Attempts[1].Deadline, 5*time.Second)
	r = h.waitStep(run.ID, "slow", api.StepFailed, 2)
	if a := r.Step("slow").Attempts; a[0].State != "timeout" || a[1].State != "timeout" || !strings.Contains(r.Step("slow").Reason, "timed out after 5s (attempt 2 of 2)") {
		t.Errorf("slow: %+v %q", a, r.Step("slow").Reason)
	}
	eventually(t, 5*time.Second, func() error {
		if n := h.web.count("/hang"); n != 2 {
			return fmt.Errorf("/hang executed %d times, want 2", n)
		}
		return nil
	})

	// pause: 10s
	r = h.waitStep(run.ID, "pause", api.StepWaiting, 1)
	end := *r.Step("pause").NextAt
	h.advance(run.ID, end, 9*time.Second)
	if g := h.get(run.ID); g.Step("pause").State != api.StepWaiting {
		t.Fatalf("pause ended early: %+v", g.Step("pause"))
	}
	h.advance(run.ID, end, time.Second)
	h.waitRun(run.ID, api.RunCompleted)
}

// Approval: the run waits until an operator decides; cmdb_update then writes the CI as
// source workflow:<name>; a rejection fails the run.
func TestApprovalAndCMDBUpdate(t *testing.T) {
	h := newHarness(t)
	defer h.startService("r1")()
	h.add(`
name: change
inputs:
  host: {required: true}
steps:
  - id: ok
    kind: approval
  - id: record
    kind: cmdb_update
    needs: [ok]
    params: {ci: {class: linux_server, ip_address: '${{ inputs.host }}'}, set: {description: 'changed by ${{ run.workflow }}'}}
`)
	run := h.run("change", map[string]any{"host": "127.0.0.9"})
	h.waitStep(run.ID, "ok", api.StepWaiting, 1)
	var out api.Run
	if err := h.call(api.RunApprove.Name, api.ApproveRequest{Run: run.ID, Step: "record"}, &out); err == nil || !strings.Contains(err.Error(), "not an approval") {
		t.Fatalf("approving a cmdb_update step: %v", err)
	}
	if err := h.call(api.RunApprove.Name, api.ApproveRequest{Run: run.ID, Step: "ok", By: "alice"}, &out); err != nil {
		t.Fatal(err)
	}
	r := h.waitRun(run.ID, api.RunCompleted)
	if st := r.Step("record"); !strings.Contains(string(st.Output), `"changed":["description"]`) || !strings.Contains(string(st.Output), `"source":"workflow:change"`) {
		t.Fatalf("record output %s", st.Output)
	}
	h.cmdb.mu.Lock()
	p := h.cmdb.payloads[0]
	h.cmdb.mu.Unlock()
	if p.Source != "workflow:change" || p.Items[0].Attributes["description"] != "changed by change" || p.Items[0].Attributes["name"] != "web1" || p.Items[0].Class != "linux_server" {
		t.Fatalf("payload %+v", p)
	}
	if err := h.call(api.RunApprove.Name, api.ApproveRequest{Run: run.ID, Step: "ok"}, &out); err == nil || !strings.Contains(err.Error(), "completed") {
		t.Fatalf("approving a finished run: %v", err)
	}

	// no CI: the step fails at once (another attempt would not find one either)
	run = h.run("change", map[string]any{"host": "127.0.0.10"})
	h.waitStep(run.ID, "ok", api.StepWaiting, 1)
	_ = h.call(api.RunApprove.Name, api.ApproveRequest{Run: run.ID, Step: "ok"}, &out)
	r = h.waitRun(run.ID, api.RunFailed)
	if !strings.Contains(r.Reason, "step record failed: no CI is a linux_server with ip_address=127.0.0.10") {
		t.Fatalf("reason %q", r.Reason)
	}

	// rejected
	run = h.run("change", map[string]any{"host": "127.0.0.9"})
	h.waitStep(run.ID, "ok", api.StepWaiting, 1)
	if err := h.call(api.RunApprove.Name, api.ApproveRequest{Run: run.ID, Step: "ok", Decision: api.Decision{Reject: true, Comment: "not now"}}, &out); err != nil {
		t.Fatal(err)
	}
	r = h.waitRun(run.ID, api.RunFailed)
	if r.Reason != "step ok failed: rejected: not now" || r.Step("record").State != api.StepSkipped {
		t.Fatalf("rejected run: %q, record %s", r.Reason, r.Step("record").State)
	}

	// canceled while it waits
	run = h.run("change", map[string]any{"host": "127.0.0.9"})
	h.waitStep(run.ID, "ok", api.StepWaiting, 1)
	if err := h.call(api.RunCancel.Name, api.RunIDRequest{ID: run.ID}, &out); err != nil {
		t.Fatal(err)
	}
	r = h.waitRun(run.ID, api.RunCanceled)
	if r.Step("ok").State != api.StepCanceled {
		t.Fatalf("ok is %s", r.Step("ok").State)
	}
	var runs api.RunsResponse
	if err := h.call(api.RunList.Name, api.RunsRequest{}, &runs); err != nil || len(runs.Runs) != 4 || runs.Runs[0].ID != run.ID {
		t.Fatalf("runs newest first: %v %+v", err, runs)
	}
}

// The service stops while a probe step runs on the bridge and again while an approval
// waits; each time a new instance resumes the run from KV: the result that arrived while no
// service ran is taken, nothing is sent twice, and the run completes.
func TestResumeAfterRestart(t *testing.T) {
	h := newHarness(t)
	stop := h.startService("r1")
	host, port := h.web.hostPort()
	h.add(fmt.Sprintf(`
name: durable
steps:
  - id: hold
    kind: http_request
    site: lab
    target: %s
    params: {scheme: http, port: %s, path: /hold}
    timeout: 1h
  - id: ok
    kind: approval
    needs: [hold]
`, host, port))
	// a second version: the run keeps the one it started with
	run := h.run("durable", nil)
	h.add(`
name: durable
steps:
  - {id: other, kind: approval}
`)
	h.waitStep(run.ID, "hold", api.StepRunning, 1)
	eventually(t, 5*time.Second, func() error {
		if h.web.count("/hold") != 1 {
			return fmt.Errorf("the target has not seen the step yet")
		}
		return nil
	})
	stop()
	close(h.web.release) // the result arrives while no orchestration service runs

	stop = h.startService("r2")
	r := h.waitStep(run.ID, "ok", api.StepWaiting, 1)
	if r.Version != 1 || r.Step("hold").State != api.StepSucceeded {
		t.Fatalf("resumed run: version %d, hold %s", r.Version, r.Step("hold").State)
	}
	stop()

	defer h.startService("r3")()
	var out api.Run
	if err := h.call(api.RunApprove.Name, api.ApproveRequest{Run: run.ID, Step: "ok"}, &out); err != nil {
		t.Fatal(err)
	}
	r = h.waitRun(run.ID, api.RunCompleted)
	key := r.Step("hold").Attempts[0].Key
	if n, m := h.web.count("/hold"), h.ran(key); n != 1 || m != 1 || len(r.Step("hold").Attempts) != 1 {
		t.Fatalf("the step ran %d times on the target, its probe %d times, in %d attempts; want 1, 1, 1", n, m, len(r.Step("hold").Attempts))
	}
}
