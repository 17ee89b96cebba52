package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	orch "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// Remediation through the real orchestration service of `outpost up`: an alert that opens
// and matches a remediate rule starts the rule's workflow with the alert as input — once,
// however many events the alert then counts; a rule naming a workflow that does not
// exist leaves the alert's remediation failed with the reason.
func TestAlertStartsARemediationWorkflow(t *testing.T) {
	t.Parallel()
	type call struct {
		Host  string `json:"host"`
		Alert string `json:"alert"`
	}
	var mu sync.Mutex
	var calls []call
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c call
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		calls = append(calls, c)
		mu.Unlock()
	}))
	defer hook.Close()
	rules := t.TempDir()
	if err := os.WriteFile(filepath.Join(rules, "remediate.yaml"), []byte(`
remediate:
  - {name: restart-web, match: {type: http_down}, workflow: restart-web, inputs: {host: "{node}", alert_id: "{id}"}}
  - {name: nowhere, match: {type: disk_full}, workflow: no-such-workflow}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	h := startHub(t, t.TempDir(), "--correlation-rules", rules)
	h.mustAPI(t, "POST", "/api/v1/workflows", orch.AddRequest{File: "restart-web.yaml", YAML: `
name: restart-web
inputs:
  host: {required: true}
  alert_id: {required: true}
steps:
  - id: call
    kind: notify
    params:
      url: ` + hook.URL + `
      body: '{"host": "${{ inputs.host }}", "alert": "${{ inputs.alert_id }}"}'
`}, nil)

	for range 5 {
		h.mustAPI(t, "POST", "/api/v1/events", api.EventInput{Node: "web-07", Type: "http_down", Severity: "critical", Message: "no answer on :80"}, nil)
	}
	h.mustAPI(t, "POST", "/api/v1/events", api.EventInput{Node: "db-01", Type: "disk_full", Severity: "major", Message: "/var full"}, nil)

	byNode := func() map[string]api.Alert {
		var out api.AlertsListResponse
		h.mustAPI(t, "GET", "/api/v1/alerts", nil, &out)
		m := map[string]api.Alert{}
		for _, a := range out.Items {
			m[a.Node] = a
		}
		return m
	}
	var web api.Alert
	eventually(t, 30*time.Second, func() error {
		web = byNode()["web-07"]
		if web.Count != 5 || len(web.Remediations) != 1 || web.Remediations[0].State != api.RemediationStarted || web.Remediations[0].Run == "" {
			return fmt.Errorf("web alert count %d remediations %+v", web.Count, web.Remediations)
		}
		return nil
	})
	var run orch.Run
	eventually(t, 30*time.Second, func() error {
		h.mustAPI(t, "GET", "/api/v1/workflow-runs/"+web.Remediations[0].Run, nil, &run)
		if run.State != orch.RunCompleted {
			return fmt.Errorf("run %s is %s %s", run.ID, run.State, run.Reason)
		}
		return nil
	})
	if run.Workflow != "restart-web" || run.Inputs["host"] != "web-07" || run.Inputs["alert_id"] != web.ID {
		t.Errorf("run %s of %s with inputs %v: want restart-web for web-07 and alert %s", run.ID, run.Workflow, run.Inputs, web.ID)
	}
	mu.Lock()
	got := append([]call(nil), calls...)
	mu.Unlock()
	if len(got) != 1 || got[0].Host != "web-07" || got[0].Alert != web.ID {
		t.Errorf("the workflow's webhook got %+v, want one call for web-07 and %s", got, web.ID)
	}

	eventually(t, 30*time.Second, func() error {
		db := byNode()["db-01"]
		if len(db.Remediations) != 1 || db.Remediations[0].State != api.RemediationFailed ||
			!strings.Contains(db.Remediations[0].Error, "no-such-workflow") {
			return fmt.Errorf("db alert remediations %+v, want one failed naming no-such-workflow", db.Remediations)
		}
		return nil
	})
	// more events on the remediated alert start nothing more
	h.mustAPI(t, "POST", "/api/v1/events", api.EventInput{Node: "web-07", Type: "http_down", Severity: "critical"}, nil)
	eventually(t, 30*time.Second, func() error {
		if a := byNode()["web-07"]; a.Count != 6 || len(a.Remediations) != 1 {
			return fmt.Errorf("count %d remediations %+v", a.Count, a.Remediations)
		}
		return nil
	})
	// the remediation started its run under the key alert:<alert id>:<rule>: a start
	// repeated with that key (a correlation replica that died before recording the run)
	// returns the same run
	var again orch.Run
	h.mustAPI(t, "POST", "/api/v1/workflows/restart-web/runs", map[string]any{"inputs": run.Inputs,
		"idempotency_key": "alert:" + web.ID + ":restart-web"}, &again)
	if again.ID != run.ID {
		t.Errorf("a repeated start with the remediation's key started run %s, want %s", again.ID, run.ID)
	}
	var runs orch.RunsResponse
	h.mustAPI(t, "GET", "/api/v1/workflow-runs", nil, &runs)
	if len(runs.Runs) != 1 {
		t.Errorf("%d workflow runs, want 1", len(runs.Runs))
	}
}
