package gateway

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeDiscovery exposes svc.discovery.* : runs, schedules, credentials (secrets write-only).
func (a *API) routeDiscovery(mux *router) {
	disc := func(role, op string, body func(*http.Request) (any, error)) http.Handler {
		return a.auth(role, a.relayTo("discovery", op, 30*time.Second, body))
	}
	jsonBody := func(r *http.Request) (any, error) { return decodeBody[json.RawMessage](r) }
	empty := func(*http.Request) (any, error) { return struct{}{}, nil }
	mux.Handle("POST /api/v1/credentials", disc(tokens.RoleAdmin, "credentials_add", jsonBody))
	mux.Handle("GET /api/v1/credentials", disc(tokens.RoleViewer, "credentials_ls", pageQuery), pageParams)
	mux.Handle("DELETE /api/v1/credentials/{name}", disc(tokens.RoleAdmin, "credentials_rm", func(r *http.Request) (any, error) {
		return map[string]string{"name": r.PathValue("name")}, nil
	}))
	// SSH host keys on record (trust on first use); forgetting one lets the next probe
	// trust whatever answers, so it takes an admin.
	mux.Handle("GET /api/v1/hostkeys", disc(tokens.RoleViewer, "hostkeys_ls", pageQuery), pageParams)
	mux.Handle("DELETE /api/v1/hostkeys/{address}", disc(tokens.RoleAdmin, "hostkeys_forget", func(r *http.Request) (any, error) {
		return map[string]string{"address": r.PathValue("address"), "site": r.URL.Query().Get("site")}, nil
	}), []queryParam{{"site", "string", "only this site's record (default: every site that knows the address)"}})
	mux.Handle("POST /api/v1/discovery/runs", disc(tokens.RoleOperator, "start", jsonBody))
	mux.Handle("GET /api/v1/discovery/runs", disc(tokens.RoleViewer, "runs_ls", pageQuery), pageParams)
	mux.Handle("GET /api/v1/discovery/runs/{id}", disc(tokens.RoleViewer, "run_get", func(r *http.Request) (any, error) {
		req := map[string]string{"id": r.PathValue("id")}
		if h := r.URL.Query().Get("host"); h != "" {
			req["host"] = h
		}
		return req, nil
	}), []queryParam{{"host", "string", "an address of the run: that host's log in full"}})
	mux.Handle("POST /api/v1/discovery/runs/{id}/cancel", disc(tokens.RoleOperator, "cancel", func(r *http.Request) (any, error) {
		return map[string]string{"id": r.PathValue("id")}, nil
	}))
	mux.Handle("POST /api/v1/discovery/schedules", disc(tokens.RoleOperator, "schedules_add", jsonBody))
	mux.Handle("GET /api/v1/discovery/schedules", disc(tokens.RoleViewer, "schedules_ls", pageQuery), pageParams)
	mux.Handle("DELETE /api/v1/discovery/schedules/{name}", disc(tokens.RoleOperator, "schedules_rm", func(r *http.Request) (any, error) {
		return map[string]string{"name": r.PathValue("name")}, nil
	}))
	mux.Handle("POST /api/v1/discovery/classifiers/reload", disc(tokens.RoleAdmin, "classifiers_reload", empty))
}
