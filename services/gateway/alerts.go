package gateway

import (
	"net/http"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeAlerts exposes svc.correlation.*: events in, alerts out, silences. Reading takes a
// viewer; sending events, acknowledging, closing and silencing take an operator.
func (a *API) routeAlerts(mux *router) {
	corr := func(role, op string, body func(*http.Request) (any, error)) http.Handler {
		return a.auth(role, a.relayTo(api.Service, op, 30*time.Second, body))
	}
	id := func(r *http.Request) (any, error) { return api.IDRequest{ID: r.PathValue("id")}, nil }
	mux.Handle("POST /api/v1/events", corr(tokens.RoleOperator, api.OpEventSend, func(r *http.Request) (any, error) {
		in, err := decodeBody[api.EventInput](r)
		if err == nil {
			err = in.Validate()
		}
		return in, err
	}))
	mux.Handle("GET /api/v1/alerts", corr(tokens.RoleViewer, api.OpAlertsList, func(r *http.Request) (any, error) {
		p, err := pageRequest(r)
		req := api.AlertsListRequest{State: r.URL.Query().Get("state"), Node: r.URL.Query().Get("node"), Request: p}
		if err == nil {
			err = req.Validate()
		}
		return req, err
	}), pageParams, []queryParam{{"state", "string", "open, acknowledged or closed (default: all)"}, {"node", "string", "only this node's alerts"}})
	mux.Handle("GET /api/v1/alerts/{id}", corr(tokens.RoleViewer, api.OpAlertGet, id))
	mux.Handle("POST /api/v1/alerts/{id}/ack", corr(tokens.RoleOperator, api.OpAlertAck, id))
	mux.Handle("POST /api/v1/alerts/{id}/close", corr(tokens.RoleOperator, api.OpAlertClose, id))
	mux.Handle("POST /api/v1/silences", corr(tokens.RoleOperator, api.OpSilenceAdd, func(r *http.Request) (any, error) {
		in, err := decodeBody[api.SilenceAddRequest](r)
		if err == nil {
			_, err = in.Validate()
		}
		return in, err
	}))
	mux.Handle("GET /api/v1/silences", corr(tokens.RoleViewer, api.OpSilencesList, pageQuery), pageParams)
	mux.Handle("DELETE /api/v1/silences/{id}", corr(tokens.RoleOperator, api.OpSilenceRm, id))
}

// alertSummaries document the routes of routeAlerts in the OpenAPI document.
var alertSummaries = map[string]string{
	"POST /api/v1/events":            "Send an event (node, type, resource, metric, severity, message, message_key, additional): published on event.hub.api (operator)",
	"GET /api/v1/alerts":             "Alerts, newest first: state, severity, count, first/last seen, CI, silences; cursor pages",
	"GET /api/v1/alerts/{id}":        "One alert",
	"POST /api/v1/alerts/{id}/ack":   "Acknowledge an open alert: it keeps counting events (operator)",
	"POST /api/v1/alerts/{id}/close": "Close an alert; the next event of its key opens a new one (operator)",
	"POST /api/v1/silences":          "Mute alerts matching every k=v of match for a duration (for: 30m, 2h) (operator)",
	"GET /api/v1/silences":           "Silences, active and ended; cursor pages",
	"DELETE /api/v1/silences/{id}":   "End a silence now (operator)",
}
