package gateway

import (
	"net/http"
	"time"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeDiscovery exposes svc.discovery.* : runs, schedules, credentials (secrets write-only).
func (a *API) routeDiscovery(mux *router) {
	const timeout = 30 * time.Second
	name := func(r *http.Request) (discoveryapi.NameRequest, error) {
		return discoveryapi.NameRequest{Name: r.PathValue("name")}, nil
	}
	id := func(r *http.Request) (discoveryapi.IDRequest, error) {
		return discoveryapi.IDRequest{ID: r.PathValue("id")}, nil
	}
	mux.Handle("POST /api/v1/credentials", a.auth(tokens.RoleAdmin, relay(a, discoveryapi.CredentialAdd, timeout, decodeBody[discoveryapi.CredentialAddRequest])),
		opDoc(discoveryapi.CredentialAdd, bodyOf[discoveryapi.CredentialAddRequest]()))
	mux.Handle("GET /api/v1/credentials", a.auth(tokens.RoleViewer, relay(a, discoveryapi.CredentialList, timeout, pageRequest)),
		opDoc(discoveryapi.CredentialList, nil, pageParams))
	mux.Handle("DELETE /api/v1/credentials/{name}", a.auth(tokens.RoleAdmin, relay(a, discoveryapi.CredentialRemove, timeout, name)),
		opDoc(discoveryapi.CredentialRemove, nil))
	// SSH host keys on record (trust on first use); forgetting one lets the next probe
	// trust whatever answers, so it takes an admin.
	mux.Handle("GET /api/v1/hostkeys", a.auth(tokens.RoleViewer, relay(a, discoveryapi.HostKeyList, timeout, pageRequest)),
		opDoc(discoveryapi.HostKeyList, nil, pageParams))
	mux.Handle("DELETE /api/v1/hostkeys/{address}", a.auth(tokens.RoleAdmin, relay(a, discoveryapi.HostKeyForget, timeout, func(r *http.Request) (discoveryapi.HostKeysRequest, error) {
		return discoveryapi.HostKeysRequest{Address: r.PathValue("address"), Site: r.URL.Query().Get("site")}, nil
	})), opDoc(discoveryapi.HostKeyForget, nil, []queryParam{{"site", "string", "only this site's record (default: every site that knows the address)"}}))
	mux.Handle("POST /api/v1/discovery/runs", a.auth(tokens.RoleOperator, relay(a, discoveryapi.Start, timeout, decodeBody[discoveryapi.StartRequest])),
		opDoc(discoveryapi.Start, bodyOf[discoveryapi.StartRequest]()))
	mux.Handle("GET /api/v1/discovery/runs", a.auth(tokens.RoleViewer, relay(a, discoveryapi.RunList, timeout, pageRequest)),
		opDoc(discoveryapi.RunList, nil, pageParams))
	mux.Handle("GET /api/v1/discovery/runs/{id}", a.auth(tokens.RoleViewer, relay(a, discoveryapi.RunGet, timeout, func(r *http.Request) (discoveryapi.IDRequest, error) {
		return discoveryapi.IDRequest{ID: r.PathValue("id"), Host: r.URL.Query().Get("host")}, nil
	})), opDoc(discoveryapi.RunGet, nil, []queryParam{{"host", "string", "an address of the run: that host's log in full"}}))
	mux.Handle("POST /api/v1/discovery/runs/{id}/cancel", a.auth(tokens.RoleOperator, relay(a, discoveryapi.Cancel, timeout, id)),
		opDoc(discoveryapi.Cancel, nil))
	mux.Handle("POST /api/v1/discovery/schedules", a.auth(tokens.RoleOperator, relay(a, discoveryapi.ScheduleAdd, timeout, decodeBody[discoveryapi.Schedule])),
		opDoc(discoveryapi.ScheduleAdd, bodyOf[discoveryapi.Schedule]()))
	mux.Handle("GET /api/v1/discovery/schedules", a.auth(tokens.RoleViewer, relay(a, discoveryapi.ScheduleList, timeout, pageRequest)),
		opDoc(discoveryapi.ScheduleList, nil, pageParams))
	mux.Handle("DELETE /api/v1/discovery/schedules/{name}", a.auth(tokens.RoleOperator, relay(a, discoveryapi.ScheduleRemove, timeout, name)),
		opDoc(discoveryapi.ScheduleRemove, nil))
	mux.Handle("POST /api/v1/discovery/classifiers/reload", a.auth(tokens.RoleAdmin, relay(a, discoveryapi.ClassifiersReload, timeout, none)),
		opDoc(discoveryapi.ClassifiersReload, nil))
	// Replay re-derives a run from its stored results into the CMDB (outpost replay): an admin's.
	mux.Handle("POST /api/v1/discovery/replay", a.auth(tokens.RoleAdmin, relay(a, discoveryapi.Replay, timeout, decodeBody[discoveryapi.ReplayRequest])),
		opDoc(discoveryapi.Replay, bodyOf[discoveryapi.ReplayRequest]()))
}

// none is the request of an op without input.
func none(*http.Request) (struct{}, error) { return struct{}{}, nil }
