package gateway

import (
	"maps"
	"net/http"
	"strconv"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// workflowSummaries document the orchestration routes (merged into summaries at start, so
// that this file is the one place the routes are described).
var workflowSummaries = map[string]string{
	"POST /api/v1/workflows":                               "Add a workflow definition (YAML): a new version of its name; refused with file, step and reason when invalid",
	"GET /api/v1/workflows":                                "List workflow definitions (latest versions); cursor pages",
	"GET /api/v1/workflows/{name}":                         "One workflow definition, latest or ?version=N",
	"POST /api/v1/workflows/{name}/runs":                   "Start a run of a workflow with inputs",
	"GET /api/v1/workflow-runs":                            "List workflow runs, newest first; cursor pages",
	"GET /api/v1/workflow-runs/{id}":                       "One workflow run: every step's state, attempts and output",
	"POST /api/v1/workflow-runs/{id}/cancel":               "Cancel a workflow run",
	"POST /api/v1/workflow-runs/{id}/steps/{step}/approve": "Approve (or with reject: true refuse) an approval step waiting in a run",
}

func init() { maps.Copy(summaries, workflowSummaries) }

// routeWorkflows exposes svc.orchestration.* : definitions, runs, approvals.
func (a *API) routeWorkflows(mux *router) {
	orch := func(role, op string, body func(*http.Request) (any, error)) http.Handler {
		return a.auth(role, a.relayTo(api.Service, op, 30*time.Second, body))
	}
	mux.Handle("POST /api/v1/workflows", orch(tokens.RoleOperator, api.OpAdd, func(r *http.Request) (any, error) {
		return decodeBody[api.AddRequest](r)
	}))
	mux.Handle("GET /api/v1/workflows", orch(tokens.RoleViewer, api.OpList, pageQuery), pageParams)
	mux.Handle("GET /api/v1/workflows/{name}", orch(tokens.RoleViewer, api.OpShow, func(r *http.Request) (any, error) {
		req := api.ShowRequest{Name: r.PathValue("name")}
		if v := r.URL.Query().Get("version"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, errField("version", "want a version number from 1")
			}
			req.Version = n
		}
		return req, nil
	}), []queryParam{{"version", "integer", "a version (default: the latest)"}})
	mux.Handle("POST /api/v1/workflows/{name}/runs", orch(tokens.RoleOperator, api.OpRun, func(r *http.Request) (any, error) {
		body, err := decodeBody[struct {
			Version int            `json:"version,omitempty"`
			Inputs  map[string]any `json:"inputs,omitempty"`
		}](r)
		if err != nil {
			return nil, err
		}
		return api.RunRequest{Name: r.PathValue("name"), Version: body.Version, Inputs: body.Inputs}, nil
	}))
	mux.Handle("GET /api/v1/workflow-runs", orch(tokens.RoleViewer, api.OpRuns, pageQuery), pageParams)
	id := func(r *http.Request) (any, error) { return api.RunIDRequest{ID: r.PathValue("id")}, nil }
	mux.Handle("GET /api/v1/workflow-runs/{id}", orch(tokens.RoleViewer, api.OpRunGet, id))
	mux.Handle("POST /api/v1/workflow-runs/{id}/cancel", orch(tokens.RoleOperator, api.OpCancel, id))
	mux.Handle("POST /api/v1/workflow-runs/{id}/steps/{step}/approve", orch(tokens.RoleOperator, api.OpApprove, func(r *http.Request) (any, error) {
		var body struct {
			Reject  bool   `json:"reject,omitempty"`
			Comment string `json:"comment,omitempty"`
		}
		if r.ContentLength != 0 {
			var err error
			if body, err = decodeBody[struct {
				Reject  bool   `json:"reject,omitempty"`
				Comment string `json:"comment,omitempty"`
			}](r); err != nil {
				return nil, err
			}
		}
		// who decided is the calling token, not what the body says
		t, _ := Caller(r.Context())
		return api.ApproveRequest{Run: r.PathValue("id"), Step: r.PathValue("step"), Reject: body.Reject, Comment: body.Comment, By: t.Name}, nil
	}))
}
