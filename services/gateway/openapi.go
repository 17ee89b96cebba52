package gateway

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// router wraps http.ServeMux and records every API route it serves.
type router struct {
	mux    *http.ServeMux
	routes []route
}

type route struct {
	method, path string
	query        []queryParam
}

// queryParam documents a query parameter of a route.
type queryParam struct{ name, typ, desc string }

// Query parameters of paged lists (libs/page; the CMDB's pages are smaller).
var (
	pageParams = []queryParam{
		{"cursor", "string", "next_cursor of the previous page, unchanged (opaque); absent for the first page"},
		{"limit", "integer", "items per page: default 100, at most 1000"},
	}
	cmdbPageParams = []queryParam{
		{"cursor", "string", "next_cursor of the previous page, unchanged (opaque); absent for the first page"},
		{"limit", "integer", "items per page: default 50, at most 500"},
	}
)

func newRouter() *router { return &router{mux: http.NewServeMux()} }

// Handle registers "METHOD /path/{param}" and remembers it, with the query parameters it
// reads, for the OpenAPI document.
func (r *router) Handle(pattern string, h http.Handler, query ...[]queryParam) {
	method, path, _ := strings.Cut(pattern, " ")
	r.routes = append(r.routes, route{method, path, slices.Concat(query...)})
	r.mux.Handle(pattern, h)
}

// Routes lists the registered API routes as "METHOD /path".
func (r *router) Routes() []string {
	out := make([]string, 0, len(r.routes))
	for _, rt := range r.routes {
		out = append(out, rt.method+" "+rt.path)
	}
	return out
}

// summaries say what each route does, for people reading the document.
var summaries = map[string]string{
	"GET /api/v1/status":                        "Streams, consumer lag, DLQ size, version",
	"GET /api/v1/audit":                         "Writes made through the API, oldest first: who, what, when, from where; cursor pages",
	"GET /api/v1/dlq":                           "Dead-lettered messages, oldest first: why, from where, a preview of the body; cursor pages",
	"GET /api/v1/whoami":                        "The calling token's name and role",
	"GET /api/v1/sites":                         "List sites",
	"POST /api/v1/sites":                        "Create a site (or change its ranges) and return an enrollment token (token_ttl, default 24h; token_uses, default any number) (admin)",
	"POST /api/v1/enrollment-tokens":            "Make another enrollment token for a site (ttl, uses, auto_approve); its secret is returned once (admin)",
	"GET /api/v1/enrollment-tokens":             "List enrollment tokens, of one site with ?site=: expiry, uses left, state; never their secrets (admin)",
	"DELETE /api/v1/enrollment-tokens/{id}":     "Revoke an enrollment token: it enrolls no more bridges (admin)",
	"GET /api/v1/agents":                        "List agents with status, pools, outbox and last heartbeat",
	"POST /api/v1/agents/{agent}/approve":       "Approve a pending agent (admin)",
	"POST /api/v1/agents/{agent}/revoke":        "Revoke an agent: its connection is closed for good, its key never enrolls again (admin)",
	"POST /api/v1/agents/{agent}/forget":        "Forget a revoked agent so that a new key may enroll under its name; the old key stays revoked (admin)",
	"POST /api/v1/agents/{agent}/control":       "ping, pause, resume, drain or logs",
	"POST /api/v1/probes":                       "Send one ad-hoc probe and wait for its result(s)",
	"GET /api/v1/cis":                           "List CIs by class (subclasses included), attribute filters, text search; cursor pages",
	"GET /api/v1/cis/{id}":                      "One CI with attributes, relations both ways and recent history",
	"GET /api/v1/cis/{id}/relations":            "Relations of a CI, both directions",
	"GET /api/v1/cis/{id}/history":              "Change history of a CI with sources; cursor pages",
	"GET /api/v1/cis/{id}/graph":                "Neighbourhood graph to a depth",
	"POST /api/v1/cis/ingest":                   "Ingest a CI payload now (manual or import source)",
	"GET /api/v1/cmdb/counts":                   "CI counts by class",
	"GET /api/v1/cmdb/conflicts":                "Identification conflicts",
	"GET /api/v1/cmdb/classes":                  "The class model",
	"POST /api/v1/tokens":                       "Create an API token; its secret is returned once (admin)",
	"GET /api/v1/tokens":                        "List API tokens, never their secrets (admin)",
	"DELETE /api/v1/tokens/{id}":                "Revoke an API token by ID, or every API token of a name (admin)",
	"POST /api/v1/credentials":                  "Store a target credential, encrypted; the secret is write-only (admin)",
	"GET /api/v1/credentials":                   "List credentials without secrets",
	"DELETE /api/v1/credentials/{name}":         "Remove a credential (admin)",
	"GET /api/v1/hostkeys":                      "List the SSH host keys on record (trust on first use)",
	"DELETE /api/v1/hostkeys/{address}":         "Forget an address's SSH host key, e.g. after a rebuild (admin)",
	"POST /api/v1/discovery/runs":               "Start a discovery run",
	"GET /api/v1/discovery/runs":                "List discovery runs",
	"GET /api/v1/discovery/runs/{id}":           "A run with its counters, or one host's log with ?host=IP",
	"POST /api/v1/discovery/runs/{id}/cancel":   "Cancel a run",
	"POST /api/v1/discovery/schedules":          "Add a discovery schedule (cron or one-off)",
	"GET /api/v1/discovery/schedules":           "List discovery schedules",
	"DELETE /api/v1/discovery/schedules/{name}": "Remove a discovery schedule",
	"POST /api/v1/discovery/classifiers/reload": "Reload classifier files; a bad set is refused and the old one kept",
}

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

// openAPI builds an OpenAPI 3.1 document of the recorded routes.
func (r *router) openAPI(version string) map[string]any {
	paths := map[string]map[string]any{}
	problemRef := map[string]any{"$ref": "#/components/responses/Problem"}
	for _, rt := range r.routes {
		op := map[string]any{
			"summary":     summaries[rt.method+" "+rt.path] + importSummaries[rt.method+" "+rt.path],
			"operationId": operationID(rt),
			"security":    []map[string][]string{{"bearer": {}}},
			"responses": map[string]any{
				"200": map[string]any{"description": "OK", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}},
				"400": problemRef, "401": problemRef, "403": problemRef, "404": problemRef, "503": problemRef,
			},
		}
		var params []map[string]any
		for _, m := range pathParam.FindAllStringSubmatch(rt.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.query {
			params = append(params, map[string]any{"name": q.name, "in": "query", "description": q.desc, "schema": map[string]any{"type": q.typ}})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if rt.method == http.MethodPost {
			op["requestBody"] = map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}}
		}
		if paths[rt.path] == nil {
			paths[rt.path] = map[string]any{}
		}
		paths[rt.path][strings.ToLower(rt.method)] = op
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": "Outpost API", "version": version, "description": "Errors are application/problem+json (RFC 9457) with a stable type per kind."},
		"paths":   paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"responses": map[string]any{"Problem": map[string]any{"description": "RFC 9457 problem",
				"content": map[string]any{"application/problem+json": map[string]any{"schema": map[string]any{
					"type": "object", "required": []string{"type", "title", "status"},
					"properties": map[string]any{"type": map[string]any{"type": "string"}, "title": map[string]any{"type": "string"},
						"status": map[string]any{"type": "integer"}, "detail": map[string]any{"type": "string"}, "instance": map[string]any{"type": "string"}}}}}}},
		},
	}
}

func operationID(rt route) string {
	parts := []string{strings.ToLower(rt.method)}
	for _, p := range strings.Split(strings.TrimPrefix(rt.path, "/api/v1/"), "/") {
		p = strings.Trim(p, "{}")
		if p != "" && !slices.Contains(parts, p) {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "_")
}
