package gateway

import (
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/schema"
)

// router wraps http.ServeMux and records every API route it serves, with its types.
type router struct {
	mux    *http.ServeMux
	routes []route
}

type route struct {
	method, path string
	doc          routeDoc
}

// routeDoc is what the OpenAPI document says of a route: the query parameters it reads, the
// contract type of its JSON body (nil: it reads none) and of its answer. An upload's body is
// a form instead: multipart/form-data with one part per field of the form type, or the file
// as the raw body (the other fields then in the query).
type routeDoc struct {
	query                []queryParam
	body, form, response reflect.Type
}

// withForm documents an upload's body: the parts of a multipart/form-data body, or the raw file.
func (d routeDoc) withForm(form reflect.Type) routeDoc { d.form = form; return d }

// opDoc documents a route served by an op: the op's answer is the route's.
func opDoc[Req, Resp any](op bus.Op[Req, Resp], body reflect.Type, query ...[]queryParam) routeDoc {
	return routeDoc{query: slices.Concat(query...), body: body, response: reflect.TypeFor[Resp]()}
}

// doc documents a route the gateway answers itself.
func doc[Resp any](body reflect.Type, query ...[]queryParam) routeDoc {
	return routeDoc{query: slices.Concat(query...), body: body, response: reflect.TypeFor[Resp]()}
}

// bodyOf is the type of a route's JSON body.
func bodyOf[T any]() reflect.Type { return reflect.TypeFor[T]() }

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

// Handle registers "METHOD /path/{param}" and remembers it, with its documentation, for the
// OpenAPI document.
func (r *router) Handle(pattern string, h http.Handler, d routeDoc) {
	method, path, _ := strings.Cut(pattern, " ")
	r.routes = append(r.routes, route{method, path, d})
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
	"GET /api/v1/dlq/{seq}":                     "One dead letter whole: reason, origin, original subject and headers, body, whether it may be retried",
	"POST /api/v1/dlq/retry":                    "Send dead letters back to their original subject with a retry marker; never with more rights than their origin (admin)",
	"POST /api/v1/dlq/purge":                    "Delete dead letters by code, service or age (admin)",
	"POST /api/v1/services":                     "Declare an application service by its entry point (https://host:443/path or host:port) (operator)",
	"GET /api/v1/services":                      "Application services and the state of their maps; cursor pages",
	"GET /api/v1/services/{name}":               "One application service with its current map: nodes, edges (how each was found), changes since the last map",
	"POST /api/v1/services/{name}/map":          "Map the service if it has no map yet (wait=true answers with the map) (operator)",
	"POST /api/v1/services/{name}/remap":        "Map the service anew now and answer with the map and what changed (operator)",
	"GET /api/v1/whoami":                        "The calling token's name and role",
	"GET /api/v1/probe-kinds":                   "Every probe kind: capability, credential types, params JSON Schema, error codes",
	"GET /api/v1/probe-kinds/{kind}":            "One probe kind: capability, credential types, params JSON Schema, error codes",
	"GET /api/v1/sites":                         "List sites",
	"POST /api/v1/sites":                        "Create a site (or change its ranges) and return an enrollment token (token_ttl, default 24h; token_uses, default any number) (admin)",
	"POST /api/v1/sites/{site}/pin-version":     "Pin the bridge version of a site; its bridges behind it upgrade themselves to the signed build (empty version: unpin) (admin)",
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
	"POST /api/v1/discovery/replay":             "Replay a run from its stored results (a replay run: RUN's probes answered from RESULTS; dry_run lists the payloads instead of sending them)",
	"POST /api/v1/orchestration/replay":         "Replay stored CMDB change events (CHANGES) to the workflows' cmdb_change triggers; a run a change started already is not started again; dry_run only lists them",
	"POST /api/v1/correlation/replay":           "Replay stored events (EVENTS) to the correlation partitions with their original sequences; an event an alert took already is skipped, one never applied is taken once (never reopening or notifying); dry_run only counts",

	"POST /api/v1/workflows":                               "Add a workflow definition (YAML): a new version of its name; refused with file, step and reason when invalid",
	"GET /api/v1/workflows":                                "List workflow definitions (latest versions); cursor pages",
	"GET /api/v1/workflows/{name}":                         "One workflow definition, latest or ?version=N",
	"POST /api/v1/workflows/{name}/runs":                   "Start a run of a workflow with inputs",
	"GET /api/v1/workflow-runs":                            "List workflow runs, newest first; cursor pages",
	"GET /api/v1/workflow-runs/{id}":                       "One workflow run: every step's state, attempts and output",
	"POST /api/v1/workflow-runs/{id}/cancel":               "Cancel a workflow run",
	"GET /api/v1/workflow-runs/{id}/steps/{step}/output":   "A step's output in pages of 512 KiB (large outputs are kept by reference in the object store)",
	"GET /api/v1/workflow-runs/{id}/events":                "A workflow run's history of events, oldest first",
	"POST /api/v1/workflow-runs/{id}/steps/{step}/approve": "Approve (or with reject: true refuse) an approval step waiting in a run",

	"POST /api/v1/events":            "Send an event (node, type, resource, metric, severity, message, message_key, additional): published on event.hub.api (operator)",
	"GET /api/v1/alerts":             "Alerts, newest first: state, severity, count, first/last seen, CI, silences; cursor pages",
	"GET /api/v1/alerts/{id}":        "One alert",
	"POST /api/v1/alerts/{id}/ack":   "Acknowledge an open alert: it keeps counting events (operator)",
	"POST /api/v1/alerts/{id}/close": "Close an alert; the next event of its key opens a new one (operator)",
	"POST /api/v1/silences":          "Mute alerts matching every k=v of match for a duration (for: 30m, 2h) (operator)",
	"GET /api/v1/silences":           "Silences, active and ended; cursor pages",
	"DELETE /api/v1/silences/{id}":   "End a silence now (operator)",
	"GET /api/v1/alert-groups":       "Topology groups: open alerts on CMDB CIs related by runs_on, depends_on, connected_to or contains, with the probable root cause",

	"POST /api/v1/metrics":             "Add or replace a metric definition: a probe (http_request, snmp_get, ssh_exec) per target on a site every interval, each target one series with an EWMA and hour-of-week baseline raising anomaly events (operator)",
	"GET /api/v1/metrics":              "Metric definitions by name; cursor pages",
	"DELETE /api/v1/metrics/{name}":    "Remove a metric definition: its collection stops (operator)",
	"GET /api/v1/metric-series":        "Series (definition × target) with their baseline, last sample, score and last collection error; ?metric= for one definition; cursor pages",
	"POST /api/v1/connectors":          "Add or replace a pull connector: another tool's event API polled through a site's bridge, each record mapped to an event (admin)",
	"GET /api/v1/connectors":           "Pull connectors with their state: polls, events, skipped and rejected records, watermark, last error; cursor pages",
	"DELETE /api/v1/connectors/{name}": "Remove a pull connector: its polling stops (admin)",

	"POST /api/v1/imports/runs":                  "Upload a file and start an import run: multipart (parts map, then file; fields format, sheet, header_row, record_path) or the file as the raw body with the map in ?map= (operator)",
	"GET /api/v1/imports/runs":                   "List import runs, newest first, with their counters; cursor pages",
	"GET /api/v1/imports/runs/{id}":              "An import run: state and counters per outcome (inserted, updated, unchanged, ignored, skipped, error)",
	"GET /api/v1/imports/runs/{id}/rows":         "A run's rows with their outcome, reason, position and staged columns; ?outcome=error for the errors; cursor pages",
	"POST /api/v1/imports/runs/{id}/retransform": "Run a changed map over a run's staged rows without uploading again (operator)",
	"POST /api/v1/imports/maps/validate":         "Check a transform map against the CMDB's class model; every problem with file, line and field",
	"POST /api/v1/imports/maps":                  "Store a transform map as the next version of its name (operator)",
	"GET /api/v1/imports/maps":                   "List stored transform maps (latest versions), by name; cursor pages",
	"GET /api/v1/imports/maps/{name}":            "A stored transform map with its YAML; ?version=N for an older version",
	"POST /api/v1/imports/maps/test":             "Dry run: a map over the first rows of a file (multipart: map or map_name, then file; rows), each row's target attributes, likely outcome and reason; nothing written (operator)",
	"POST /api/v1/imports/schedules":             "Schedule an import: multipart parts name, cron, map_name, file options, then the file, kept for every slot (operator)",
	"GET /api/v1/imports/schedules":              "List import schedules with their next slot and last run; cursor pages",
	"DELETE /api/v1/imports/schedules/{name}":    "Remove an import schedule and its file (operator)",
	"POST /api/v1/imports/sources":               "Store a data source read through a site's bridge: sql, ldap, rest or file, its params and credential name (admin)",
	"GET /api/v1/imports/sources":                "List stored import data sources by name; cursor pages",
	"GET /api/v1/imports/sources/{name}":         "A stored import data source",
	"DELETE /api/v1/imports/sources/{name}":      "Remove a stored import data source (its runs keep their copy) (admin)",
	"POST /api/v1/imports/sources/{name}/runs":   "Start an import run reading the source through its site's bridges, with a transform map (operator)",
}

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

// openAPI builds an OpenAPI 3.1 document of the recorded routes. Request and response
// schemas are generated from the contract types (libs/api) by reflection (libs/schema), so
// the document says what the code encodes; shared types are components.
func (r *router) openAPI(version string) map[string]any {
	gen := schema.New("#/components/schemas/")
	paths := map[string]map[string]any{}
	problemRef := map[string]any{"$ref": "#/components/responses/Problem"}
	jsonOf := func(t reflect.Type) map[string]any {
		return map[string]any{"application/json": map[string]any{"schema": gen.Schema(t)}}
	}
	for _, rt := range r.routes {
		responses := map[string]any{"400": problemRef, "401": problemRef, "403": problemRef, "404": problemRef, "503": problemRef}
		if rt.doc.response != nil {
			responses["200"] = map[string]any{"description": "OK", "content": jsonOf(rt.doc.response)}
		}
		op := map[string]any{
			"summary":     summaries[rt.method+" "+rt.path],
			"operationId": operationID(rt),
			"security":    []map[string][]string{{"bearer": {}}},
			"responses":   responses,
		}
		var params []map[string]any
		for _, m := range pathParam.FindAllStringSubmatch(rt.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.doc.query {
			params = append(params, map[string]any{"name": q.name, "in": "query", "description": q.desc, "schema": map[string]any{"type": q.typ}})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		switch {
		case rt.doc.body != nil:
			op["requestBody"] = map[string]any{"required": true, "content": jsonOf(rt.doc.body)}
		case rt.doc.form != nil:
			op["requestBody"] = map[string]any{"required": true,
				"description": "multipart/form-data with these parts (the map before the file), or the file as the raw body with the other parts as query parameters",
				"content": map[string]any{
					"multipart/form-data":      map[string]any{"schema": gen.Schema(rt.doc.form)},
					"application/octet-stream": map[string]any{"schema": map[string]any{"type": "string", "contentMediaType": "application/octet-stream"}},
				}}
		case rt.method == http.MethodPost:
			// The request is in the path: a body, if any, is not read.
			op["requestBody"] = map[string]any{"required": false, "description": "none: the request is in the path",
				"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object", "maxProperties": 0}}}}
		}
		if paths[rt.path] == nil {
			paths[rt.path] = map[string]any{}
		}
		paths[rt.path][strings.ToLower(rt.method)] = op
	}
	problem := gen.Schema(reflect.TypeFor[Problem]())
	codes := []string{}
	for _, e := range errs.Table {
		if e.Scope&errs.API != 0 {
			codes = append(codes, e.Code.ProblemType())
		}
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "Outpost API", "version": version,
			"description": "Errors are application/problem+json (RFC 9457) with a stable type per code of the error table: " + strings.Join(codes, ", ") + "."},
		"paths": paths,
		"components": map[string]any{
			"schemas":         gen.Defs(),
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"responses": map[string]any{"Problem": map[string]any{"description": "RFC 9457 problem",
				"content": map[string]any{"application/problem+json": map[string]any{"schema": problem}}}},
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
