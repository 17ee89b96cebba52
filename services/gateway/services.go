package gateway

import (
	"net/http"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeServices exposes Service Mapping (svc.mapping.*): declaring application services
// (operator), listing and showing them with their map (viewer), mapping and re-mapping
// (operator: it sends probes to the site's hosts).
func (a *API) routeServices(mux *router) {
	name := func(r *http.Request) api.NameRequest { return api.NameRequest{Name: r.PathValue("name")} }
	mux.Handle("POST /api/v1/services", a.auth(tokens.RoleOperator, relay(a, api.Add, 30*time.Second, func(r *http.Request) (api.AddRequest, error) {
		return decodeBody[api.AddRequest](r)
	})), opDoc(api.Add, bodyOf[api.AddRequest]()))
	mux.Handle("GET /api/v1/services", a.auth(tokens.RoleViewer, relay(a, api.List, 10*time.Second, pageRequest)), opDoc(api.List, nil, pageParams))
	mux.Handle("GET /api/v1/services/{name}", a.auth(tokens.RoleViewer, relay(a, api.Show, 10*time.Second, func(r *http.Request) (api.NameRequest, error) {
		return name(r), nil
	})), opDoc(api.Show, nil))
	// wait=true holds the request until the first map exists (up to the timeout); clients
	// that may wait longer start it without and poll GET /api/v1/services/{name}.
	mux.Handle("POST /api/v1/services/{name}/map", a.auth(tokens.RoleOperator, relay(a, api.MapOp, 55*time.Second, func(r *http.Request) (api.MapRequest, error) {
		return api.MapRequest{Name: r.PathValue("name"), Wait: r.URL.Query().Get("wait") == "true"}, nil
	})), opDoc(api.MapOp, nil, []queryParam{{"wait", "boolean", "map first when there is no map yet, and answer with it"}}))
	mux.Handle("POST /api/v1/services/{name}/remap", a.auth(tokens.RoleOperator, relay(a, api.Remap, 55*time.Second, func(r *http.Request) (api.NameRequest, error) {
		return name(r), nil
	})), opDoc(api.Remap, nil))
}
