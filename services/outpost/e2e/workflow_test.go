package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/lab"
)

// A workflow through `outpost up` and a real bridge: ssh_exec on a lab host with a stored
// credential — the hub is killed (SIGKILL) while the command runs on the bridge —,
// http_request to a lab web server, an approval given after the hub was killed again while
// it waited, and cmdb_update on the discovered CI, whose attribute then names the workflow
// as its source. The lab host counts exactly one execution of the command.
func TestWorkflowEndToEnd(t *testing.T) {
	t.Parallel()
	const cidr = "127.77.124.0/24"
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 16, Seed: 3})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	defer l.Close()
	var linux, web lab.Host
	for _, mh := range l.Manifest().Hosts {
		if mh.Hostile {
			continue
		}
		if linux.IP == "" && mh.Class == "linux_server" && mh.Credentials.SSH != nil {
			linux = mh
		}
		if web.IP == "" && slices.Contains(mh.OpenTCP, 80) {
			web = mh
		}
	}
	if linux.IP == "" || web.IP == "" {
		t.Fatal("the lab has no linux server with SSH or no web server")
	}
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "lab", cidr, true)
	startBridge(t, h, "lab", "br1", tok)
	h.waitStatus(t, "br1", "up")
	h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": "lab-ssh", "type": "ssh", "site": "lab",
		"username": linux.Credentials.SSH.Username, "secret": linux.Credentials.SSH.Password}, nil)
	if r := waitDiscovery(t, h, startDiscovery(t, h, "lab", linux.IP+"/32"), 2*time.Minute); r.State != "completed" {
		t.Fatalf("discovery of %s: %+v", linux.IP, r)
	}

	// a bad definition is refused with file, step and reason
	code, b := h.api(t, "POST", "/api/v1/workflows", api.AddRequest{File: "bad.yaml", YAML: "name: bad\nsteps:\n  - {id: a, kind: approval, needs: [b]}\n"})
	if code != 400 || !strings.Contains(string(b), `bad.yaml: step a: needs \"b\": no step has that id`) {
		t.Fatalf("bad definition: %d %s", code, b)
	}
	var added api.AddResponse
	h.mustAPI(t, "POST", "/api/v1/workflows", api.AddRequest{File: "flow.yaml", YAML: `
name: e2e-flow
inputs:
  host: {required: true}
  web: {required: true}
steps:
  - id: who
    kind: ssh_exec
    site: lab
    target: '${{ inputs.host }}'
    credentials: [lab-ssh]
    params: {commands: ["sleep 3; hostname"]}
  - id: page
    kind: http_request
    site: lab
    needs: [who]
    target: '${{ inputs.web }}'
    params: {scheme: http, port: 80, path: /}
  - id: ok
    kind: approval
    needs: [page]
  - id: record
    kind: cmdb_update
    needs: [ok]
    params: {ci: {class: linux_server, ip_address: '${{ inputs.host }}'}, set: {description: 'host ${{ trim(steps.who.output.outputs[0].stdout.text) }}'}}
`}, &added)
	var run api.Run
	h.mustAPI(t, "POST", "/api/v1/workflows/e2e-flow/runs", map[string]any{"inputs": map[string]string{"host": linux.IP, "web": web.IP}}, &run)
	get := func() api.Run {
		var r api.Run
		h.mustAPI(t, "GET", "/api/v1/workflow-runs/"+run.ID, nil, &r)
		return r
	}
	// the command runs on the bridge: the hub dies; its result waits in the bridge's outbox
	eventually(t, time.Minute, func() error {
		if n := l.Execs(linux.IP, "sleep 3; hostname"); n != 1 {
			return fmt.Errorf("the lab host executed the step %d times", n)
		}
		return nil
	})
	h.proc.kill(t)
	h.restart(t)
	eventually(t, time.Minute, func() error {
		if r := get(); r.Step("ok").State != api.StepWaiting {
			return fmt.Errorf("run %s (%s): ok is %s", r.State, r.Reason, r.Step("ok").State)
		}
		return nil
	})
	r := get()
	if who := string(r.Step("who").Output); !strings.Contains(who, linux.Name) || r.Step("who").Attempts[0].Agent != "br1" {
		t.Fatalf("who: %s", who)
	}
	if page := string(r.Step("page").Output); !strings.Contains(page, `"status":200`) {
		t.Fatalf("page: %s", page)
	}

	h.proc.kill(t)
	h.restart(t)
	// the approval lands once the restarted hub's orchestration serves again
	eventually(t, 30*time.Second, func() error {
		code, b := h.api(t, "POST", "/api/v1/workflow-runs/"+run.ID+"/steps/ok/approve", nil)
		if code != 200 {
			return fmt.Errorf("approve: %d %s", code, b)
		}
		return nil
	})
	eventually(t, 30*time.Second, func() error {
		if r = get(); r.State != api.RunCompleted {
			return fmt.Errorf("run %s: %s", r.State, r.Reason)
		}
		return nil
	})
	if r.Step("ok").Approval == nil || r.Step("ok").Approval.By != "admin" || len(r.Step("who").Attempts) != 1 {
		t.Fatalf("approval %+v, who attempts %d", r.Step("ok").Approval, len(r.Step("who").Attempts))
	}
	if n := l.Execs(linux.IP, "sleep 3; hostname"); n != 1 {
		t.Fatalf("the lab host executed the step's one attempt %d times, want 1", n)
	}
	var hist api.EventsResponse
	h.mustAPI(t, "GET", "/api/v1/workflow-runs/"+run.ID+"/events", nil, &hist)
	if len(hist.Events) == 0 || hist.Events[0].Type != "run.started" || hist.Events[len(hist.Events)-1].Type != "run.completed" {
		t.Fatalf("history: %+v", hist.Events)
	}
	var out struct {
		CI string `json:"ci"`
	}
	_ = json.Unmarshal(r.Step("record").Output, &out)
	var ci struct {
		Attributes map[string]any                     `json:"attributes"`
		Sources    map[string]struct{ Source string } `json:"sources"`
	}
	h.mustAPI(t, "GET", "/api/v1/cis/"+out.CI, nil, &ci)
	if ci.Attributes["description"] != "host "+linux.Name || ci.Sources["description"].Source != "workflow:e2e-flow" || ci.Attributes["ip_address"] != linux.IP {
		t.Fatalf("CI %s: description %v from %q", out.CI, ci.Attributes["description"], ci.Sources["description"].Source)
	}
}

// The retry policy against a lab web server that is unavailable twice (503 with
// Retry-After: 1) and then answers: through the hub and a real bridge the step makes
// exactly three attempts, each the lab counts once, each later one started no sooner than
// the target asked (Retry-After outweighs the shorter backoff), and the run completes.
func TestWorkflowRetryAgainstLab(t *testing.T) {
	t.Parallel()
	const cidr = "127.77.188.0/24"
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 16, Seed: 3})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	defer l.Close()
	var web lab.Host
	for _, mh := range l.Manifest().Hosts {
		if !mh.Hostile && slices.Contains(mh.OpenTCP, 80) {
			web = mh
			break
		}
	}
	if web.IP == "" {
		t.Fatal("the lab has no web server on port 80")
	}
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "lab", cidr, true)
	startBridge(t, h, "lab", "br1", tok)
	h.waitStatus(t, "br1", "up")
	h.mustAPI(t, "POST", "/api/v1/workflows", api.AddRequest{File: "retry.yaml", YAML: `
name: e2e-retry
inputs:
  web: {required: true}
  key: {required: true}
steps:
  - id: call
    kind: http_request
    site: lab
    target: '${{ inputs.web }}'
    params: {scheme: http, port: 80, path: '/flaky?key=${{ inputs.key }}&fail=2'}
    retry: {max_attempts: 3, backoff: fixed, initial: 100ms}
`}, nil)
	key := "e2e-retry-" + t.Name()
	var run api.Run
	h.mustAPI(t, "POST", "/api/v1/workflows/e2e-retry/runs", map[string]any{"inputs": map[string]string{"web": web.IP, "key": key}}, &run)
	var r api.Run
	eventually(t, time.Minute, func() error {
		h.mustAPI(t, "GET", "/api/v1/workflow-runs/"+run.ID, nil, &r)
		if r.State != api.RunCompleted {
			return fmt.Errorf("run %s (%s): call is %s", r.State, r.Reason, r.Step("call").State)
		}
		return nil
	})
	st := r.Step("call")
	if len(st.Attempts) != 3 || st.State != api.StepSucceeded {
		t.Fatalf("call: %s with %d attempts: %+v", st.State, len(st.Attempts), st.Attempts)
	}
	if n := l.FlakyHits(key); n != 3 {
		t.Fatalf("the lab answered %d requests of the step, want exactly 3 (one per attempt)", n)
	}
	for i, a := range st.Attempts {
		want := "failed"
		if i == 2 {
			want = "succeeded"
		}
		if a.State != want || a.Agent != "br1" {
			t.Errorf("attempt %d: %s on %q, want %s on br1 (%s)", a.N, a.State, a.Agent, want, a.Error)
		}
		if i < 2 && !strings.Contains(a.Error, "HTTP 503") {
			t.Errorf("attempt %d failed with %q, want HTTP 503", a.N, a.Error)
		}
		if i > 0 && st.Attempts[i-1].Finished != nil && a.Started.Before(st.Attempts[i-1].Finished.Add(time.Second)) {
			t.Errorf("attempt %d started %s after attempt %d ended: the target asked for Retry-After: 1", a.N, a.Started.Sub(*st.Attempts[i-1].Finished), i)
		}
	}
	if !strings.Contains(string(st.Output), `"status":200`) {
		t.Errorf("output: %s", st.Output)
	}
}
