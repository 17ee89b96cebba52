package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// Workflow pages: the definitions, one definition, and a run with its steps in the order
// they can run (each with its needs), every attempt, output and log, followed live over
// Server-Sent Events; operators approve or reject a waiting approval step from the page.

func init() {
	funcs["stepPill"] = stepPill
	funcs["outputText"] = outputText
	funcs["stepArgs"] = func(p *page, s stepView) stepArgs { return stepArgs{Page: p, Step: s} }
}

// stepArgs passes the page (roles, the run) and a step to the recursive step template.
type stepArgs struct {
	Page *page
	Step stepView
}

// stepPill colours run and step states.
func stepPill(state string) string {
	switch state {
	case api.StepSucceeded, api.RunCompleted:
		return "pill good"
	case api.StepFailed, "timeout":
		return "pill bad"
	case api.StepRunning, api.StepRetrying, api.StepWaiting, api.StepPending:
		return "pill busy"
	}
	return "pill quiet"
}

// maxShownOutput is how much of an output the run page shows (the rest: the output link).
const maxShownOutput = 4 << 10

// outputText is a step's output as indented JSON, cut at maxShownOutput.
func outputText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var b bytes.Buffer
	if json.Indent(&b, raw, "", "  ") != nil {
		b.Reset()
		b.Write(raw)
	}
	if b.Len() > maxShownOutput {
		return b.String()[:maxShownOutput] + "\n… (cut: the whole output is behind the output link)"
	}
	return b.String()
}

type workflowsData struct {
	Workflows []api.WorkflowSummary
	Runs      []api.Run
}

func (c *Console) workflows(w http.ResponseWriter, r *http.Request) {
	var (
		f    fetches
		defs api.ListResponse
		runs api.RunsResponse
	)
	f.get(c, r, "/api/v1/workflows?limit=200", &defs)
	f.get(c, r, "/api/v1/workflow-runs?limit=50", &runs)
	errs := f.wait()
	c.show(w, r, http.StatusOK, "workflows", &page{Title: "Workflows", Nav: "workflows", Data: workflowsData{Workflows: defs.Workflows, Runs: runs.Runs}}, errs...)
}

func (c *Console) workflow(w http.ResponseWriter, r *http.Request) {
	var d api.Definition
	path := "/api/v1/workflows/" + url.PathEscape(r.PathValue("name"))
	if v := r.URL.Query().Get("version"); v != "" {
		path += "?version=" + url.QueryEscape(v)
	}
	err := c.call(r, http.MethodGet, path, nil, &d)
	status := http.StatusOK
	if err != nil {
		status = statusOf(err)
	}
	c.show(w, r, status, "workflow", &page{Title: "Workflow " + r.PathValue("name"), Nav: "workflows", Data: d}, err)
}

// stepView is one step of a run as the run page shows it.
type stepView struct {
	Def      api.Step
	Run      api.StepRun
	Needs    []string
	Items    []api.StepRun // a for_each step's items
	Counts   map[string]int
	Comps    []stepView // compensating steps, once they were added
	Log      []api.Event
	Approval bool // an approval waiting for a decision
}

type runView struct {
	Run   api.Run
	Steps []stepView
	Final bool
}

// buildRunView orders a run's steps as they can run (needs first, definition order among
// peers) and attaches items, compensations and each step's events.
func buildRunView(run api.Run, def api.Definition, events []api.Event) runView {
	v := runView{Run: run, Final: run.Done()}
	byStep := map[string][]api.Event{}
	for _, e := range events {
		id := e.Step
		byStep[id] = append(byStep[id], e)
	}
	steps := def.Workflow.Steps
	placed := map[string]bool{}
	var order []api.Step
	for len(order) < len(steps) {
		progress := false
		for _, s := range steps {
			if placed[s.ID] {
				continue
			}
			ready := true
			for _, n := range s.Needs {
				ready = ready && placed[n]
			}
			if ready {
				placed[s.ID] = true
				order = append(order, s)
				progress = true
			}
		}
		if !progress {
			break // a cycle cannot be stored; never mind the rest
		}
	}
	view := func(s api.Step, st api.StepRun) stepView {
		sv := stepView{Def: s, Run: st, Needs: s.Needs, Log: lastEvents(byStep[st.ID], 50)}
		sv.Approval = st.Kind == api.KindApproval && st.State == api.StepWaiting
		return sv
	}
	for _, s := range order {
		st := run.Step(s.ID)
		if st == nil {
			continue
		}
		sv := view(s, *st)
		if s.ForEach != "" {
			sv.Counts = map[string]int{}
			for _, it := range run.Steps {
				if it.Parent == s.ID {
					sv.Items = append(sv.Items, it)
					sv.Counts[it.State]++
				}
			}
		}
		for _, cs := range s.OnFailure.Compensate {
			if cst := run.Step(s.ID + ":" + cs.ID); cst != nil {
				cs.ID = s.ID + ":" + cs.ID
				sv.Comps = append(sv.Comps, view(cs, *cst))
			}
		}
		v.Steps = append(v.Steps, sv)
	}
	return v
}

func lastEvents(evs []api.Event, n int) []api.Event {
	if len(evs) > n {
		return evs[len(evs)-n:]
	}
	return evs
}

// loadRun reads a run, the definition version it runs and its history.
func (c *Console) loadRun(r *http.Request, id string) (runView, []error) {
	var run api.Run
	if err := c.call(r, http.MethodGet, "/api/v1/workflow-runs/"+url.PathEscape(id), nil, &run); err != nil {
		return runView{}, []error{err}
	}
	var (
		f    fetches
		def  api.Definition
		hist api.EventsResponse
	)
	f.get(c, r, fmt.Sprintf("/api/v1/workflows/%s?version=%d", url.PathEscape(run.Workflow), run.Version), &def)
	f.get(c, r, "/api/v1/workflow-runs/"+url.PathEscape(id)+"/events", &hist)
	errs := f.wait()
	return buildRunView(run, def, hist.Events), errs
}

func (c *Console) workflowRun(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	v, errs := c.loadRun(r, id)
	status := http.StatusOK
	if v.Run.ID == "" && len(errs) > 0 {
		status = statusOf(errs[0])
	}
	c.show(w, r, status, "workflow_run", &page{Title: "Workflow run " + id, Nav: "workflows", Data: v}, errs...)
}

// workflowApprove approves or rejects a waiting approval step (the API checks the role and
// records the signed-in token as the approver).
func (c *Console) workflowApprove(w http.ResponseWriter, r *http.Request) {
	id, step := r.PathValue("id"), r.PathValue("step")
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d := api.Decision{Reject: r.PostForm.Get("decision") == "reject", Comment: strings.TrimSpace(r.PostForm.Get("comment"))}
	to := Prefix + "/workflow-runs/" + url.PathEscape(id)
	if err := c.call(r, http.MethodPost, "/api/v1/workflow-runs/"+url.PathEscape(id)+"/steps/"+url.PathEscape(step)+"/approve", d, nil); err != nil {
		v, errs := c.loadRun(r, id)
		c.show(w, r, statusOf(err), "workflow_run", &page{Title: "Workflow run " + id, Nav: "workflows", Data: v}, append([]error{err}, errs...)...)
		return
	}
	msg := "Step " + step + " approved."
	if d.Reject {
		msg = "Step " + step + " rejected."
	}
	done(w, r, to, msg)
}

func (c *Console) workflowRunCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := c.call(r, http.MethodPost, "/api/v1/workflow-runs/"+url.PathEscape(id)+"/cancel", nil, nil); err != nil {
		v, errs := c.loadRun(r, id)
		c.show(w, r, statusOf(err), "workflow_run", &page{Title: "Workflow run " + id, Nav: "workflows", Data: v}, append([]error{err}, errs...)...)
		return
	}
	done(w, r, Prefix+"/workflow-runs/"+url.PathEscape(id), "Cancel requested.")
}

// workflowRunEvents streams a run as Server-Sent Events ("event: run" with its state and
// Updated whenever it changed; "event: end" once it is final). The page then fetches its
// own HTML again and swaps the run's section: rendering stays on the server.
func (c *Console) workflowRunEvents(w http.ResponseWriter, r *http.Request) {
	path := "/api/v1/workflow-runs/" + url.PathEscape(r.PathValue("id"))
	c.stream(w, r, "run", true, func() ([]byte, bool, error) {
		var run api.Run
		if err := c.call(r, http.MethodGet, path, nil, &run); err != nil {
			return nil, false, err
		}
		b, err := json.Marshal(map[string]any{"state": run.State, "updated": run.Updated, "seq": run.Seq})
		return b, run.Done(), err
	})
}
