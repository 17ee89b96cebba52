package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeCIs exposes the CMDB (svc.cmdb.*) under /api/v1/cis.
func (a *API) routeCIs(mux *router) {
	const timeout = 15 * time.Second
	viewer := func(h http.Handler) http.Handler { return a.auth(tokens.RoleViewer, h) }
	mux.Handle("GET /api/v1/cis", viewer(relay(a, cmdbapi.List, timeout, func(r *http.Request) (cmdbapi.ListRequest, error) {
		q := r.URL.Query()
		req := cmdbapi.ListRequest{Class: q.Get("class"), Search: q.Get("search"), Cursor: q.Get("cursor")}
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return req, errField("limit", "want a number")
			}
			req.Limit = n
		}
		// Attribute filters: ?attr.os=Debian&attr.serial_number=X
		for k, v := range q {
			if name, ok := strings.CutPrefix(k, "attr."); ok && len(v) > 0 {
				if req.Filters == nil {
					req.Filters = map[string]string{}
				}
				req.Filters[name] = v[0]
			}
		}
		return req, nil
	})), opDoc(cmdbapi.List, nil, []queryParam{
		{"class", "string", "a class; its subclasses are included (server includes linux_server)"},
		{"search", "string", "case-insensitive prefix of a name, IP, serial number, MAC, FQDN or fingerprint"},
		{"attr.NAME", "string", "attribute NAME equals the value (trimmed, case-insensitive); repeatable with other names"},
	}, cmdbPageParams))
	id := func(r *http.Request) (cmdbapi.IDRequest, error) { return cmdbapi.IDRequest{ID: r.PathValue("id")}, nil }
	mux.Handle("GET /api/v1/cis/{id}", viewer(relay(a, cmdbapi.Get, timeout, id)), opDoc(cmdbapi.Get, nil))
	mux.Handle("GET /api/v1/cis/{id}/relations", viewer(relay(a, cmdbapi.Rel, timeout, id)), opDoc(cmdbapi.Rel, nil))
	mux.Handle("GET /api/v1/cis/{id}/history", viewer(relay(a, cmdbapi.History, timeout, func(r *http.Request) (cmdbapi.HistoryRequest, error) {
		req := cmdbapi.HistoryRequest{ID: r.PathValue("id"), Cursor: r.URL.Query().Get("cursor")}
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return req, errField("limit", "want a number")
			}
			req.Limit = n
		}
		return req, nil
	})), opDoc(cmdbapi.History, nil, cmdbPageParams))
	mux.Handle("GET /api/v1/cis/{id}/graph", viewer(relay(a, cmdbapi.GraphOp, timeout, func(r *http.Request) (cmdbapi.GraphRequest, error) {
		req := cmdbapi.GraphRequest{ID: r.PathValue("id")}
		if d := r.URL.Query().Get("depth"); d != "" {
			n, err := strconv.Atoi(d)
			if err != nil {
				return req, errField("depth", "want a number")
			}
			req.Depth = n
		}
		return req, nil
	})), opDoc(cmdbapi.GraphOp, nil, []queryParam{{"depth", "integer", "hops from the CI: default 1, at most 5"}}))
	// The body is the payload itself.
	mux.Handle("POST /api/v1/cis/ingest", a.auth(tokens.RoleOperator, relay(a, cmdbapi.Ingest, 60*time.Second, func(r *http.Request) (cmdbapi.IngestRequest, error) {
		p, err := decodeBody[envelope.CIPayload](r)
		return cmdbapi.IngestRequest{Payload: p}, err
	})), opDoc(cmdbapi.Ingest, bodyOf[envelope.CIPayload]()))
	mux.Handle("GET /api/v1/cmdb/counts", viewer(relay(a, cmdbapi.Counts, timeout, none)), opDoc(cmdbapi.Counts, nil))
	mux.Handle("GET /api/v1/cmdb/conflicts", viewer(relay(a, cmdbapi.Conflicts, timeout, func(*http.Request) (cmdbapi.PageRequest, error) {
		return cmdbapi.PageRequest{}, nil
	})), opDoc(cmdbapi.Conflicts, nil))
	mux.Handle("GET /api/v1/cmdb/classes", viewer(relay(a, cmdbapi.Classes, timeout, none)), opDoc(cmdbapi.Classes, nil))
}

type fieldError struct{ field, msg string }

func (e fieldError) Error() string { return "field " + strconv.Quote(e.field) + ": " + e.msg }

func errField(field, msg string) error { return fieldError{field, msg} }
