package gateway

import (
	"net/http"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeAlerts exposes svc.correlation.*: events in, alerts out, silences. Reading takes a
// viewer; sending events, acknowledging, closing and silencing take an operator. Bodies are
// checked here too, so bad input is a 400 naming the field before it reaches the bus.
func (a *API) routeAlerts(mux *router) {
	const timeout = 30 * time.Second
	id := func(r *http.Request) (api.IDRequest, error) { return api.IDRequest{ID: r.PathValue("id")}, nil }
	mux.Handle("POST /api/v1/events", a.auth(tokens.RoleOperator, relay(a, api.EventSend, timeout, func(r *http.Request) (api.EventInput, error) {
		in, err := decodeBody[api.EventInput](r)
		if err == nil {
			err = in.Validate()
		}
		return in, err
	})), opDoc(api.EventSend, bodyOf[api.EventInput]()))
	mux.Handle("GET /api/v1/alerts", a.auth(tokens.RoleViewer, relay(a, api.AlertList, timeout, func(r *http.Request) (api.AlertsListRequest, error) {
		p, err := pageRequest(r)
		req := api.AlertsListRequest{State: r.URL.Query().Get("state"), Node: r.URL.Query().Get("node"), Request: p}
		if err == nil {
			err = req.Validate()
		}
		return req, err
	})), opDoc(api.AlertList, nil, pageParams, []queryParam{{"state", "string", "open, acknowledged or closed (default: all)"}, {"node", "string", "only this node's alerts"}}))
	mux.Handle("GET /api/v1/alerts/{id}", a.auth(tokens.RoleViewer, relay(a, api.AlertGet, timeout, id)),
		opDoc(api.AlertGet, nil))
	mux.Handle("POST /api/v1/alerts/{id}/ack", a.auth(tokens.RoleOperator, relay(a, api.AlertAck, timeout, id)),
		opDoc(api.AlertAck, nil))
	mux.Handle("POST /api/v1/alerts/{id}/close", a.auth(tokens.RoleOperator, relay(a, api.AlertClose, timeout, id)),
		opDoc(api.AlertClose, nil))
	mux.Handle("POST /api/v1/silences", a.auth(tokens.RoleOperator, relay(a, api.SilenceAdd, timeout, func(r *http.Request) (api.SilenceAddRequest, error) {
		in, err := decodeBody[api.SilenceAddRequest](r)
		if err == nil {
			_, err = in.Validate()
		}
		return in, err
	})), opDoc(api.SilenceAdd, bodyOf[api.SilenceAddRequest]()))
	mux.Handle("GET /api/v1/silences", a.auth(tokens.RoleViewer, relay(a, api.SilenceList, timeout, pageRequest)),
		opDoc(api.SilenceList, nil, pageParams))
	mux.Handle("DELETE /api/v1/silences/{id}", a.auth(tokens.RoleOperator, relay(a, api.SilenceRemove, timeout, id)),
		opDoc(api.SilenceRemove, nil))
	mux.Handle("GET /api/v1/alert-groups", a.auth(tokens.RoleViewer, relay(a, api.GroupList, timeout, pageRequest)),
		opDoc(api.GroupList, nil, pageParams))
	// Replay re-routes stored EVENTS to the partitions (outpost replay --to correlation):
	// an admin's, like the other replays; a request reads at most api.ReplayLimit messages.
	mux.Handle("POST /api/v1/correlation/replay", a.auth(tokens.RoleAdmin, relay(a, api.Replay, 2*time.Minute, decodeBody[api.ReplayRequest])),
		opDoc(api.Replay, bodyOf[api.ReplayRequest]()))
	a.routeCollect(mux, timeout)
}

// routeCollect exposes the collection definitions: metrics (scheduled samples, baselines,
// anomaly events) and pull connectors (another tool's event API polled through a site's
// bridge). Metrics take an operator, as discovery schedules do; a connector is a standing
// data source read with a stored credential, so it takes an admin, as import sources do.
func (a *API) routeCollect(mux *router, timeout time.Duration) {
	name := func(r *http.Request) (api.NameRequest, error) { return api.NameRequest{Name: r.PathValue("name")}, nil }
	mux.Handle("POST /api/v1/metrics", a.auth(tokens.RoleOperator, relay(a, api.MetricAdd, timeout, func(r *http.Request) (api.MetricDef, error) {
		in, err := decodeBody[api.MetricDef](r)
		if err == nil {
			err = in.Validate()
		}
		return in, err
	})), opDoc(api.MetricAdd, bodyOf[api.MetricDef]()))
	mux.Handle("GET /api/v1/metrics", a.auth(tokens.RoleViewer, relay(a, api.MetricList, timeout, pageRequest)),
		opDoc(api.MetricList, nil, pageParams))
	mux.Handle("DELETE /api/v1/metrics/{name}", a.auth(tokens.RoleOperator, relay(a, api.MetricRemove, timeout, name)),
		opDoc(api.MetricRemove, nil))
	mux.Handle("GET /api/v1/metric-series", a.auth(tokens.RoleViewer, relay(a, api.SeriesList, timeout, func(r *http.Request) (api.SeriesListRequest, error) {
		p, err := pageRequest(r)
		return api.SeriesListRequest{Metric: r.URL.Query().Get("metric"), Request: p}, err
	})), opDoc(api.SeriesList, nil, pageParams, []queryParam{{"metric", "string", "only this metric definition's series"}}))
	mux.Handle("POST /api/v1/connectors", a.auth(tokens.RoleAdmin, relay(a, api.ConnectorAdd, timeout, func(r *http.Request) (api.Connector, error) {
		in, err := decodeBody[api.Connector](r)
		if err == nil {
			err = in.Validate()
		}
		return in, err
	})), opDoc(api.ConnectorAdd, bodyOf[api.Connector]()))
	mux.Handle("GET /api/v1/connectors", a.auth(tokens.RoleViewer, relay(a, api.ConnectorList, timeout, pageRequest)),
		opDoc(api.ConnectorList, nil, pageParams))
	mux.Handle("DELETE /api/v1/connectors/{name}", a.auth(tokens.RoleAdmin, relay(a, api.ConnectorRemove, timeout, name)),
		opDoc(api.ConnectorRemove, nil))
}
