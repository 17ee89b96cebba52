package gateway_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// Every registered route is documented, every documented route exists, and each has a summary.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	e := newEnv(t, true)
	resp, body := e.get(t, "/api/v1/openapi.json", e.admin)
	if resp.StatusCode != 200 {
		t.Fatalf("openapi.json: %d", resp.StatusCode)
	}
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("not an OpenAPI 3 document: %v", err)
	}
	param := regexp.MustCompile(`\{[a-z_]+\}`)
	n := 0
	for path, ops := range doc.Paths {
		for method, op := range ops {
			n++
			if op["summary"] == "" || op["summary"] == nil {
				t.Errorf("%s %s has no summary", method, path)
			}
			// The documented route exists: a request reaches its handler, not the catch-all 404.
			req, _ := http.NewRequest(strings.ToUpper(method), e.base+param.ReplaceAllString(path, "x"), strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer "+e.admin)
			r, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var p struct{ Detail string }
			_ = json.NewDecoder(r.Body).Decode(&p)
			r.Body.Close()
			if r.StatusCode == 404 && strings.Contains(p.Detail, "is not an Outpost API route") {
				t.Errorf("documented %s %s does not exist", method, path)
			}
		}
	}
	if n < 25 {
		t.Fatalf("only %d operations documented", n)
	}
	// Every list that can grow pages with a cursor, and says so.
	for _, path := range []string{"/api/v1/agents", "/api/v1/sites", "/api/v1/credentials", "/api/v1/discovery/runs",
		"/api/v1/discovery/schedules", "/api/v1/tokens", "/api/v1/enrollment-tokens", "/api/v1/audit", "/api/v1/dlq", "/api/v1/cis", "/api/v1/cis/{id}/history",
		"/api/v1/workflows", "/api/v1/workflow-runs", "/api/v1/alerts", "/api/v1/silences"} {
		params, _ := doc.Paths[path]["get"]["parameters"].([]any)
		have := map[string]bool{}
		for _, p := range params {
			if m, ok := p.(map[string]any); ok && m["in"] == "query" {
				have[m["name"].(string)] = true
			}
		}
		if !have["cursor"] || !have["limit"] {
			t.Errorf("GET %s does not document ?cursor= and ?limit=", path)
		}
	}
}

// Every operation documents its answer, and every write its body, with a schema generated
// from the contract types; every reference resolves.
func TestOpenAPISchemasComeFromContracts(t *testing.T) {
	e := newEnv(t, true)
	_, body := e.get(t, "/api/v1/openapi.json", e.admin)
	var doc struct {
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	// schemaOf is the JSON body's schema, or an upload's form (multipart/form-data).
	schemaOf := func(content any) map[string]any {
		c, _ := content.(map[string]any)
		j, ok := c["application/json"].(map[string]any)
		if !ok {
			j, _ = c["multipart/form-data"].(map[string]any)
		}
		s, _ := j["schema"].(map[string]any)
		return s
	}
	// refs collects every $ref below v.
	var refs func(v any, out *[]string)
	refs = func(v any, out *[]string) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && k == "$ref" {
					*out = append(*out, s)
				}
				refs(e, out)
			}
		case []any:
			for _, e := range x {
				refs(e, out)
			}
		}
	}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			res, _ := op["responses"].(map[string]any)
			ok, _ := res["200"].(map[string]any)
			s := schemaOf(ok["content"])
			if len(s) == 0 {
				t.Errorf("%s %s: no response schema", method, path)
			}
			if method == "post" {
				rb, _ := op["requestBody"].(map[string]any)
				if len(schemaOf(rb["content"])) == 0 {
					t.Errorf("%s %s: no request schema", method, path)
				}
			}
			var rs []string
			refs(op, &rs)
			for _, r := range rs {
				name, found := strings.CutPrefix(r, "#/components/schemas/")
				if found && doc.Components.Schemas[name] == nil {
					t.Errorf("%s %s: %s does not resolve", method, path, r)
				}
			}
		}
	}
	// Spot checks: the schemas are the contract types, field for field.
	for _, c := range []struct {
		path, method, where, schema string
		props                       []string
	}{
		{"/api/v1/sites", "post", "request", "agents.SiteAddRequest", []string{"name", "ranges", "token_ttl", "token_uses"}},
		{"/api/v1/agents", "get", "response", "agents.ListReply", []string{"agents", "next_cursor"}},
		{"/api/v1/discovery/runs/{id}", "get", "response", "discovery.Run", []string{"id", "counters", "pending_probes", "hosts", "host"}},
		{"/api/v1/cis/ingest", "post", "request", "envelope.CIPayload", []string{"source", "observed", "items"}},
		{"/api/v1/tokens", "post", "response", "gateway.TokenCreated", []string{"token", "id", "role"}},
		{"/api/v1/events", "post", "request", "correlation.EventInput", []string{"node", "severity", "message_key", "additional"}},
		{"/api/v1/alerts", "get", "response", "correlation.AlertsListResponse", []string{"items", "next_cursor"}},
		{"/api/v1/silences", "post", "request", "correlation.SilenceAddRequest", []string{"match", "for", "comment"}},
		{"/api/v1/imports/runs", "post", "request", "importer.UploadForm", []string{"map", "file", "format", "sheet", "header_row", "record_path"}},
		{"/api/v1/imports/runs", "post", "response", "importer.Run", []string{"id", "state", "counters"}},
		{"/api/v1/imports/runs/{id}/rows", "get", "response", "importer.RowsResponse", []string{"rows", "next_cursor"}},
		{"/api/v1/imports/runs/{id}/retransform", "post", "request", "importer.MapSource", []string{"map", "map_file"}},
	} {
		op := doc.Paths[c.path][c.method]
		var content any
		if c.where == "request" {
			rb, _ := op["requestBody"].(map[string]any)
			content = rb["content"]
		} else {
			res, _ := op["responses"].(map[string]any)
			ok, _ := res["200"].(map[string]any)
			content = ok["content"]
		}
		if got := schemaOf(content)["$ref"]; got != "#/components/schemas/"+c.schema {
			t.Errorf("%s %s %s: schema %v, want %s", c.method, c.path, c.where, got, c.schema)
			continue
		}
		props, _ := doc.Components.Schemas[c.schema]["properties"].(map[string]any)
		for _, p := range c.props {
			if props[p] == nil {
				t.Errorf("%s has no property %q", c.schema, p)
			}
		}
	}
}
