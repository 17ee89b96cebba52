package gateway

import (
	"net/http"
	"strconv"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeWorkflows exposes svc.orchestration.* : definitions, runs, approvals.
func (a *API) routeWorkflows(mux *router) {
	const timeout = 30 * time.Second
	id := func(r *http.Request) (api.RunIDRequest, error) { return api.RunIDRequest{ID: r.PathValue("id")}, nil }
	mux.Handle("POST /api/v1/workflows", a.auth(tokens.RoleOperator, relay(a, api.Add, timeout, decodeBody[api.AddRequest])),
		opDoc(api.Add, bodyOf[api.AddRequest]()))
	mux.Handle("GET /api/v1/workflows", a.auth(tokens.RoleViewer, relay(a, api.List, timeout, pageRequest)),
		opDoc(api.List, nil, pageParams))
	mux.Handle("GET /api/v1/workflows/{name}", a.auth(tokens.RoleViewer, relay(a, api.Show, timeout, func(r *http.Request) (api.ShowRequest, error) {
		req := api.ShowRequest{Name: r.PathValue("name")}
		if v := r.URL.Query().Get("version"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return req, errField("version", "want a version number from 1")
			}
			req.Version = n
		}
		return req, nil
	})), opDoc(api.Show, nil, []queryParam{{"version", "integer", "a version (default: the latest)"}}))
	mux.Handle("POST /api/v1/workflows/{name}/runs", a.auth(tokens.RoleOperator, relay(a, api.RunStart, timeout, func(r *http.Request) (api.RunRequest, error) {
		opts, err := decodeBody[api.RunOptions](r)
		return api.RunRequest{Name: r.PathValue("name"), RunOptions: opts}, err
	})), opDoc(api.RunStart, bodyOf[api.RunOptions]()))
	mux.Handle("GET /api/v1/workflow-runs", a.auth(tokens.RoleViewer, relay(a, api.RunList, timeout, pageRequest)),
		opDoc(api.RunList, nil, pageParams))
	mux.Handle("GET /api/v1/workflow-runs/{id}", a.auth(tokens.RoleViewer, relay(a, api.RunGet, timeout, id)),
		opDoc(api.RunGet, nil))
	mux.Handle("GET /api/v1/workflow-runs/{id}/events", a.auth(tokens.RoleViewer, relay(a, api.RunEvents, timeout, id)),
		opDoc(api.RunEvents, nil))
	mux.Handle("GET /api/v1/workflow-runs/{id}/steps/{step}/output", a.auth(tokens.RoleViewer, relay(a, api.RunOutput, timeout, func(r *http.Request) (api.OutputRequest, error) {
		req := api.OutputRequest{Run: r.PathValue("id"), Step: r.PathValue("step")}
		if v := r.URL.Query().Get("offset"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return req, errField("offset", "want a byte offset from 0 (next of the previous page)")
			}
			req.Offset = n
		}
		return req, nil
	})), opDoc(api.RunOutput, nil, []queryParam{{"offset", "integer", "where to read from: next of the previous page (default 0)"}}))
	mux.Handle("POST /api/v1/workflow-runs/{id}/cancel", a.auth(tokens.RoleOperator, relay(a, api.RunCancel, timeout, id)),
		opDoc(api.RunCancel, nil))
	mux.Handle("POST /api/v1/workflow-runs/{id}/steps/{step}/approve", a.auth(tokens.RoleOperator, relay(a, api.RunApprove, timeout, func(r *http.Request) (api.ApproveRequest, error) {
		var d api.Decision
		if r.ContentLength != 0 { // no body at all approves
			var err error
			if d, err = decodeBody[api.Decision](r); err != nil {
				return api.ApproveRequest{}, err
			}
		}
		// who decided is the calling token, not what the body says
		t, _ := Caller(r.Context())
		return api.ApproveRequest{Run: r.PathValue("id"), Step: r.PathValue("step"), Decision: d, By: t.Name}, nil
	})), opDoc(api.RunApprove, bodyOf[api.Decision]()))
	// Replay re-delivers stored CMDB change events to the cmdb_change triggers (outpost
	// replay --to orchestration): an admin's, like discovery's; a request reads at most
	// api.ReplayLimit changes, whose run starts may take longer than a lookup.
	mux.Handle("POST /api/v1/orchestration/replay", a.auth(tokens.RoleAdmin, relay(a, api.Replay, 2*time.Minute, decodeBody[api.ReplayRequest])),
		opDoc(api.Replay, bodyOf[api.ReplayRequest]()))
}
