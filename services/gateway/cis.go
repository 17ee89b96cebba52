package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeCIs exposes the CMDB (svc.cmdb.*) under /api/v1/cis.
func (a *API) routeCIs(mux *router) {
	cmdb := func(op string, body func(*http.Request) (any, error)) http.Handler {
		return a.auth(tokens.RoleViewer, a.relayTo("cmdb", op, 15*time.Second, body))
	}
	mux.Handle("GET /api/v1/cis", cmdb("ls", func(r *http.Request) (any, error) {
		q := r.URL.Query()
		req := map[string]any{}
		if v := q.Get("class"); v != "" {
			req["class"] = v
		}
		if v := q.Get("search"); v != "" {
			req["search"] = v
		}
		if v := q.Get("cursor"); v != "" {
			req["cursor"] = v
		}
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, errField("limit", "want a number")
			}
			req["limit"] = n
		}
		// Attribute filters: ?attr.os=Debian&attr.serial_number=X
		filters := map[string]string{}
		for k, v := range q {
			if name, ok := strings.CutPrefix(k, "attr."); ok && len(v) > 0 {
				filters[name] = v[0]
			}
		}
		if len(filters) > 0 {
			req["filters"] = filters
		}
		return req, nil
	}), []queryParam{
		{"class", "string", "a class; its subclasses are included (server includes linux_server)"},
		{"search", "string", "case-insensitive prefix of a name, IP, serial number, MAC, FQDN or fingerprint"},
		{"attr.NAME", "string", "attribute NAME equals the value (trimmed, case-insensitive); repeatable with other names"},
	}, cmdbPageParams)
	id := func(r *http.Request) (any, error) { return map[string]any{"id": r.PathValue("id")}, nil }
	mux.Handle("GET /api/v1/cis/{id}", cmdb("get", id))
	mux.Handle("GET /api/v1/cis/{id}/relations", cmdb("rel", id))
	mux.Handle("GET /api/v1/cis/{id}/history", cmdb("history", func(r *http.Request) (any, error) {
		req := map[string]any{"id": r.PathValue("id")}
		if c := r.URL.Query().Get("cursor"); c != "" {
			req["cursor"] = c
		}
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, errField("limit", "want a number")
			}
			req["limit"] = n
		}
		return req, nil
	}), cmdbPageParams)
	mux.Handle("GET /api/v1/cis/{id}/graph", cmdb("graph", func(r *http.Request) (any, error) {
		req := map[string]any{"id": r.PathValue("id")}
		if d := r.URL.Query().Get("depth"); d != "" {
			n, err := strconv.Atoi(d)
			if err != nil {
				return nil, errField("depth", "want a number")
			}
			req["depth"] = n
		}
		return req, nil
	}), []queryParam{{"depth", "integer", "hops from the CI: default 1, at most 5"}})
	mux.Handle("POST /api/v1/cis/ingest", a.auth(tokens.RoleOperator, a.relayTo("cmdb", "ingest", 60*time.Second, func(r *http.Request) (any, error) {
		p, err := decodeBody[json.RawMessage](r)
		return map[string]any{"payload": p}, err
	})))
	mux.Handle("GET /api/v1/cmdb/counts", cmdb("counts", nil))
	mux.Handle("GET /api/v1/cmdb/conflicts", cmdb("conflicts", nil))
	mux.Handle("GET /api/v1/cmdb/classes", cmdb("classes", nil))
}

type fieldError struct{ field, msg string }

func (e fieldError) Error() string { return "field " + strconv.Quote(e.field) + ": " + e.msg }

func errField(field, msg string) error { return fieldError{field, msg} }
