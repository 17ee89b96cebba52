package e2e

// The console's workflow pages in a real headless Chromium against `outpost up`: the
// definitions list, a run's steps in order with their needs, an approval approved from the
// page by the admin (an operator role), the run then finishing live (Server-Sent Events, no
// reload), each step's attempts and log; a viewer sees no approve button and is refused
// when posting the form anyway.

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

func TestConsoleWorkflowPages(t *testing.T) {
	dir := t.TempDir()
	h := &testHub{dir: dir, http: freeAddr(t), nats: freeAddr(t)}
	h.proc = start(t, "outpost", "up", "--no-local-bridge", "--data", dir, "--http", h.http, "--nats", h.nats)
	eventually(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + h.http + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	h.mustAPI(t, "POST", "/api/v1/workflows", api.AddRequest{File: "gate.yaml", YAML: `
name: gated
description: waits for an operator, then for a second
steps:
  - {id: gate, kind: approval, params: {message: "go ahead?"}}
  - {id: pause, kind: wait, needs: [gate], params: {duration: 2s}}
  - {id: after, kind: approval, needs: [pause], if: 'false'}
`}, nil)
	var run, second api.Run
	h.mustAPI(t, "POST", "/api/v1/workflows/gated/runs", map[string]any{}, &run)
	h.mustAPI(t, "POST", "/api/v1/workflows/gated/runs", map[string]any{}, &second)
	var viewer gatewayapi.TokenCreated
	h.mustAPI(t, "POST", "/api/v1/tokens", gatewayapi.TokenCreateRequest{Name: "watcher", Role: "viewer"}, &viewer)

	base := "http://" + h.http
	ct := openConsole(t, 3*time.Minute, "workflow-failed")
	tab, ctx, shots := ct.tab, ct.ctx, ct.shots
	must, eval, text := ct.must, ct.eval, ct.text
	signIn := func(token string) {
		t.Helper()
		must("sign in", chromedp.Navigate(base+"/console/signin"), chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.SetValue(chromedp.ID("token"), token),
			chromedp.Click(chromedp.CSS(`form.signin button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(`nav.side`)))
	}
	signIn(h.token(t))

	// the definitions and recent runs
	must("workflows page", chromedp.Navigate(base+"/console/workflows"), chromedp.WaitVisible(chromedp.ID("workflows")))
	if n := eval(`document.querySelectorAll('#workflows a[href="/console/workflows/gated"]').length`); n != 1 {
		t.Fatalf("the definition is listed %d times", n)
	}
	if n := eval(`document.querySelectorAll('#workflow-runs a[href^="/console/workflow-runs/"]').length`); n != 2 {
		t.Fatalf("%d runs listed, want 2", n)
	}
	must("definition page", chromedp.Click(chromedp.CSS(`#workflows a[href="/console/workflows/gated"]`)), chromedp.WaitVisible(chromedp.ID("workflow-steps")))
	if got := text(`#workflow-steps`); !strings.Contains(got, "pause") || !strings.Contains(got, "gate") {
		t.Fatalf("definition steps: %q", got)
	}
	screenshot(t, tab, shots, "10-workflow")

	// the run: steps in order with needs; the gate waits for an approval
	must("run page", chromedp.Navigate(base+"/console/workflow-runs/"+run.ID), chromedp.WaitVisible(chromedp.CSS(`#step-gate form.wf-approve`)))
	order, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('#wf-steps > li')].map(li => li.id).join(",")`))
	if err != nil {
		t.Fatal(err)
	}
	if order != "step-gate,step-pause,step-after" {
		t.Fatalf("steps in order %q", order)
	}
	if got := text(`#step-pause`); !strings.Contains(got, "needs gate") {
		t.Fatalf("pause step: %q", got)
	}
	if s := text(`#step-gate .step-state`); s != "waiting" {
		t.Fatalf("gate is %q", s)
	}
	screenshot(t, tab, shots, "11-run-waiting")
	must("approve", chromedp.SetValue(chromedp.CSS(`#step-gate input[name=comment]`), "looks fine"),
		chromedp.Click(chromedp.CSS(`#step-gate button[value=approve]`)), chromedp.WaitVisible(chromedp.ID("wf-run-state")))
	// The decision is a form post: wait for the page it lands on (the gate shows the
	// approval) before marking it, or the marker may be set on the page being left.
	eventually(t, 30*time.Second, func() error {
		// read without failing: the node may be detached while the new page loads
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector('#step-gate') || {}).innerText || ""`))
		if err != nil {
			return err
		}
		if !strings.Contains(got, "approved by admin") {
			return fmt.Errorf("gate after approval: %q", got)
		}
		return nil
	})
	// the page after the decision follows the run live: a marker proves no reload
	eval(`window.outpostMarker = 1`)
	eventually(t, time.Minute, func() error {
		// read without failing: live updates swap the page's nodes
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector('#wf-run-state') || {}).innerText || ""`))
		if err != nil {
			return err
		}
		if strings.TrimSpace(s) != "completed" {
			return fmt.Errorf("run state %q", s)
		}
		return nil
	})
	if eval(`window.outpostMarker || 0`) != 1 {
		t.Fatal("the run page reloaded instead of updating in place")
	}
	// the stream's last event refreshes the section once more: read without failing
	eventually(t, 30*time.Second, func() error {
		if got, err := ct.textNow(`#step-gate`); err != nil || !strings.Contains(got, "approved by admin: looks fine") {
			return fmt.Errorf("gate after approval: %q (%v)", got, err)
		}
		if s, err := ct.textNow(`#step-after .step-state`); err != nil || strings.TrimSpace(s) != "skipped" {
			return fmt.Errorf("after is %q (%v)", s, err)
		}
		return nil
	})
	if n := eval(`document.querySelectorAll('#step-pause table.attempts tbody tr').length`); n != 1 {
		t.Fatalf("pause shows %d attempts", n)
	}
	if n := eval(`document.querySelectorAll('#step-gate details.step-log tr').length`); n == 0 {
		t.Fatal("the gate step shows no log")
	}
	screenshot(t, tab, shots, "12-run-completed")

	// a viewer: no approve button, and the form posted anyway is refused by the API
	must("sign out", chromedp.Click(chromedp.CSS(`form[action="/console/signout"] button`)), chromedp.WaitVisible(chromedp.ID("token")))
	signIn(viewer.Token)
	must("run page as viewer", chromedp.Navigate(base+"/console/workflow-runs/"+second.ID), chromedp.WaitVisible(chromedp.CSS(`#step-gate .step-state`)))
	if n := eval(`document.querySelectorAll('form.wf-approve').length`); n != 0 {
		t.Fatal("a viewer is offered the approve form")
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(async () => {
		const r = await fetch("/console/workflow-runs/`+second.ID+`/steps/gate/approve", {method: "POST", credentials: "same-origin",
			headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "decision=approve"});
		document.body.dataset.approveStatus = String(r.status);
		return "";
	})()`, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatal(err)
	}
	if n := eval(`Number(document.body.dataset.approveStatus)`); n != http.StatusForbidden {
		t.Fatalf("a viewer's approval answered %d, want 403", n)
	}
	var r api.Run
	h.mustAPI(t, "GET", "/api/v1/workflow-runs/"+second.ID, nil, &r)
	if r.Step("gate").State != api.StepWaiting {
		t.Fatalf("after a viewer's attempt the gate is %s", r.Step("gate").State)
	}
}
