package gateway

import (
	"net/http"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeImportSources exposes the import data sources read through a site's bridges
// (svc.importer.source_*).
func (a *API) routeImportSources(mux *router) {
	const timeout = 30 * time.Second
	named := func(r *http.Request) (api.SourceRequest, error) {
		return api.SourceRequest{Name: r.PathValue("name")}, nil
	}
	mux.Handle("POST /api/v1/imports/sources", a.auth(tokens.RoleAdmin, relay(a, api.SourceAdd, timeout, decodeBody[api.Source])),
		opDoc(api.SourceAdd, bodyOf[api.Source]()))
	mux.Handle("GET /api/v1/imports/sources", a.auth(tokens.RoleViewer, relay(a, api.SourceList, timeout, pageRequest)),
		opDoc(api.SourceList, nil, pageParams))
	mux.Handle("GET /api/v1/imports/sources/{name}", a.auth(tokens.RoleViewer, relay(a, api.SourceGet, timeout, named)),
		opDoc(api.SourceGet, nil))
	mux.Handle("DELETE /api/v1/imports/sources/{name}", a.auth(tokens.RoleAdmin, relay(a, api.SourceRemove, timeout, named)),
		opDoc(api.SourceRemove, nil))
	mux.Handle("POST /api/v1/imports/sources/{name}/runs", a.auth(tokens.RoleOperator, relay(a, api.SourceRun, timeout, func(r *http.Request) (api.SourceRunRequest, error) {
		m, err := decodeBody[api.MapSource](r)
		return api.SourceRunRequest{Source: r.PathValue("name"), MapSource: m}, err
	})), opDoc(api.SourceRun, bodyOf[api.MapSource]()))
}
