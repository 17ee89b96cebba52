package orchestration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// A step that fails runs its compensating steps one after another; the step running beside
// it is canceled, the steps after it skipped, and the run fails naming the compensations.
// A step that succeeds runs none.
func TestCompensation(t *testing.T) {
	h := newHarness(t)
	defer h.startService("r1")()
	host, port := h.web.hostPort()
	h.add(fmt.Sprintf(`
name: saga
inputs: {path: {required: true}}
steps:
  - id: reserve
    kind: http_request
    site: lab
    target: %[1]s
    params: {scheme: http, port: %[2]s, path: /reserve}
  - id: deploy
    kind: http_request
    site: lab
    target: %[1]s
    needs: [reserve]
    params: {scheme: http, port: %[2]s, path: '${{ inputs.path }}'}
    on_failure:
      - {id: rollback, kind: http_request, site: lab, target: %[1]s, params: {scheme: http, port: %[2]s, path: /rollback}}
      - id: release
        kind: http_request
        site: lab
        target: %[1]s
        if: '${{ steps.reserve.state == "succeeded" && steps.deploy.state == "failed" }}'
        params: {scheme: http, port: %[2]s, path: '/release/${{ steps.deploy.attempts }}'}
  - id: beside
    kind: http_request
    site: lab
    target: %[1]s
    needs: [reserve]
    params: {scheme: http, port: %[2]s, path: /hold}
  - id: after
    kind: approval
    needs: [deploy]
`, host, port))

	// /flaky answers 503 first: with no retry the step fails
	r := h.run("saga", map[string]any{"path": "/flaky"})
	done := h.waitRun(r.ID, api.RunFailed)
	if !strings.Contains(done.Reason, "step deploy failed: HTTP 503") || !strings.Contains(done.Reason, "compensated by deploy:rollback, deploy:release") {
		t.Errorf("reason %q", done.Reason)
	}
	for id, want := range map[string]string{"reserve": api.StepSucceeded, "deploy": api.StepFailed, "beside": api.StepCanceled,
		"after": api.StepSkipped, "deploy:rollback": api.StepSucceeded, "deploy:release": api.StepSucceeded} {
		if st := done.Step(id); st == nil || st.State != want {
			t.Errorf("step %s: %+v, want %s", id, st, want)
		}
	}
	if st := done.Step("deploy:release"); st.Compensates != "deploy" {
		t.Errorf("release compensates %q", st.Compensates)
	}
	// one after another: in the history, release starts after rollback succeeded
	var hist api.EventsResponse
	if err := h.call(api.RunEvents.Name, api.RunIDRequest{ID: r.ID}, &hist); err != nil {
		t.Fatal(err)
	}
	rolledBack, released := -1, -1
	for i, e := range hist.Events {
		if e.Step == "deploy:rollback" && e.Type == "step.succeeded" && rolledBack < 0 {
			rolledBack = i
		}
		if e.Step == "deploy:release" && e.Into != nil && len(e.Into.Attempts) > 0 && released < 0 {
			released = i
		}
	}
	if rolledBack < 0 || released < rolledBack {
		t.Errorf("rollback succeeded at event %d, release started at event %d", rolledBack, released)
	}
	for path, want := range map[string]int{"/rollback": 1, "/release/1": 1} {
		if n := h.web.count(path); n != want {
			t.Errorf("%s executed %d times, want %d", path, n, want)
		}
	}

	// a step that succeeds: no compensation
	ok := h.waitRun(h.run("saga", map[string]any{"path": "/fine"}).ID, api.RunRunning)
	h.waitStep(ok.ID, "after", api.StepWaiting, 1)
	if r := h.get(ok.ID); r.Step("deploy:rollback") != nil {
		st := r.Step("deploy:rollback")
		t.Errorf("compensation ran for a step that succeeded: %+v", st)
	}
	if n := h.web.count("/rollback"); n != 1 {
		t.Errorf("/rollback executed %d times in all, want 1", n)
	}
	var out api.Run
	if err := h.call(api.RunCancel.Name, api.RunIDRequest{ID: ok.ID}, &out); err != nil {
		t.Fatal(err)
	}
}

// A workflow step runs a child run with inputs; the child links to its parent, its outputs
// are the step's output; canceling the parent cancels the child.
func TestSubWorkflow(t *testing.T) {
	h := newHarness(t)
	defer h.startService("r1")()
	host, port := h.web.hostPort()
	h.add(fmt.Sprintf(`
name: child
inputs: {path: {required: true}, hold: {type: bool, default: false}}
steps:
  - {id: get, kind: http_request, site: lab, target: %s, params: {scheme: http, port: %s, path: '${{ inputs.path }}'}}
  - {id: gate, kind: approval, needs: [get], if: '${{ inputs.hold }}'}
outputs:
  body: '${{ steps.get.output.body.text }}'
  status: '${{ steps.get.output.status }}'
`, host, port))
	h.add(`
name: parent
inputs: {hold: {type: bool, default: false}}
steps:
  - {id: sub, kind: workflow, params: {workflow: child, inputs: {path: /sub, hold: '${{ inputs.hold }}'}}}
  - {id: next, kind: approval, needs: [sub], if: '${{ steps.sub.output.outputs.status != 200 }}'}
outputs:
  from_child: '${{ steps.sub.output.outputs.body }}'
`)

	p := h.waitRun(h.run("parent", nil).ID, api.RunCompleted)
	var out struct {
		Run     string         `json:"run"`
		Outputs map[string]any `json:"outputs"`
	}
	if err := json.Unmarshal(p.Step("sub").Output, &out); err != nil {
		t.Fatal(err)
	}
	if out.Outputs["body"] != "ok /sub 1" || out.Run == "" || out.Run != p.Step("sub").Attempts[0].Child {
		t.Errorf("step output %s (attempt child %s)", p.Step("sub").Output, p.Step("sub").Attempts[0].Child)
	}
	if p.Outputs["from_child"] != "ok /sub 1" {
		t.Errorf("parent outputs %v", p.Outputs)
	}
	if st := p.Step("next"); st.State != api.StepSkipped {
		t.Errorf("next: %s", st.State)
	}
	c := h.get(out.Run)
	if c.State != api.RunCompleted || c.Parent == nil || c.Parent.Run != p.ID || c.Parent.Step != "sub" || c.Trigger == nil || c.Trigger.Kind != "workflow" {
		t.Errorf("child %s parent %+v trigger %+v", c.State, c.Parent, c.Trigger)
	}
	if p.Trigger == nil || p.Trigger.Kind != "api" {
		t.Errorf("parent trigger %+v", p.Trigger)
	}

	// cancel propagates: the child waits for an approval, the parent is canceled
	p2 := h.run("parent", map[string]any{"hold": true})
	var child string
	eventually(t, 15*time.Second, func() error {
		r := h.get(p2.ID)
		if st := r.Step("sub"); len(st.Attempts) == 1 && st.Attempts[0].Child != "" {
			child = st.Attempts[0].Child
			if c := h.get(child); c.Step("gate") != nil && c.Step("gate").State == api.StepWaiting {
				return nil
			}
		}
		return fmt.Errorf("the child does not wait for its approval yet")
	})
	var canceled api.Run
	if err := h.call(api.RunCancel.Name, api.RunIDRequest{ID: p2.ID}, &canceled); err != nil {
		t.Fatal(err)
	}
	h.waitRun(p2.ID, api.RunCanceled)
	if c := h.waitRun(child, api.RunCanceled); c.Step("gate").State != api.StepCanceled {
		t.Errorf("child's gate %s", c.Step("gate").State)
	}
}

// A replica crashes between recording a workflow step's attempt (naming its child) and
// starting the child: the replica that resumes the parent starts the child with the
// recorded id, once, and the parent completes with its output.
func TestSubWorkflowCrashResume(t *testing.T) {
	h := newHarness(t)
	reached := make(chan struct{})
	var once sync.Once
	kill := h.startCrashable("r1", func(ctx context.Context, point string) {
		if point == "child-recorded" {
			once.Do(func() { close(reached) })
			<-ctx.Done()
		}
	})
	host, port := h.web.hostPort()
	h.add(fmt.Sprintf(`
name: child
steps:
  - {id: get, kind: http_request, site: lab, target: %s, params: {scheme: http, port: %s, path: /child}}
outputs:
  body: '${{ steps.get.output.body.text }}'
`, host, port))
	h.add(`
name: parent
steps:
  - {id: sub, kind: workflow, params: {workflow: child}}
`)
	run := h.run("parent", nil)
	<-reached
	kill()
	if h.web.count("/child") != 0 {
		t.Fatal("the child ran before the crash point")
	}

	kill = h.startCrashable("r1", nil)
	defer kill()
	p := h.waitRun(run.ID, api.RunCompleted)
	// the child the attempt named before the crash is the one that ran
	var hist api.EventsResponse
	if err := h.call(api.RunEvents.Name, api.RunIDRequest{ID: run.ID}, &hist); err != nil {
		t.Fatal(err)
	}
	recorded := ""
	for _, e := range hist.Events {
		if e.Step == "sub" && e.Into != nil && len(e.Into.Attempts) > 0 && recorded == "" {
			recorded = e.Into.Attempts[0].Child
		}
	}
	if recorded == "" {
		t.Fatal("the attempt was recorded without its child")
	}
	if st := p.Step("sub"); len(st.Attempts) != 1 || st.Attempts[0].Child != recorded {
		t.Fatalf("attempts %+v, want one naming %s", st.Attempts, recorded)
	}
	if !strings.Contains(string(p.Step("sub").Output), `"body":"ok /child 1"`) {
		t.Errorf("step output %s", p.Step("sub").Output)
	}
	children := 0
	for _, r := range h.runs() {
		if r.Workflow == "child" {
			children++
			if r.ID != recorded || r.Parent == nil || r.Parent.Run != run.ID {
				t.Errorf("child run %s parent %+v", r.ID, r.Parent)
			}
		}
	}
	if children != 1 || h.web.count("/child") != 1 {
		t.Errorf("%d child runs, the target executed %d times; want 1 and 1", children, h.web.count("/child"))
	}
}
