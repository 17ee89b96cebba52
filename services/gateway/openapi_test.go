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
		"/api/v1/discovery/schedules", "/api/v1/tokens", "/api/v1/enrollment-tokens", "/api/v1/audit", "/api/v1/dlq", "/api/v1/cis", "/api/v1/cis/{id}/history"} {
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
