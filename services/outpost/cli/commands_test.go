package cli_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/services/outpost/cli"
)

// commandOf maps every API route to the command that uses it: a route without a command,
// or a command that went away, fails TestEveryRouteHasACommand.
var commandOf = map[string]string{
	"POST /api/v1/events":                       "events send",
	"POST /api/v1/discovery/replay":             "replay",
	"POST /api/v1/orchestration/replay":         "replay",
	"POST /api/v1/correlation/replay":           "replay",
	"GET /api/v1/alerts":                        "alerts ls",
	"GET /api/v1/alerts/{id}":                   "alerts show",
	"POST /api/v1/alerts/{id}/ack":              "alerts ack",
	"POST /api/v1/alerts/{id}/close":            "alerts close",
	"POST /api/v1/silences":                     "silences add",
	"GET /api/v1/silences":                      "silences ls",
	"DELETE /api/v1/silences/{id}":              "silences rm",
	"GET /api/v1/alert-groups":                  "alerts groups",
	"GET /api/v1/status":                        "status",
	"GET /api/v1/whoami":                        "whoami",
	"GET /api/v1/audit":                         "audit ls",
	"GET /api/v1/dlq":                           "dlq ls",
	"GET /api/v1/dlq/{seq}":                     "dlq show",
	"POST /api/v1/dlq/retry":                    "dlq retry",
	"POST /api/v1/dlq/purge":                    "dlq purge",
	"POST /api/v1/services":                     "services add",
	"GET /api/v1/services":                      "services ls",
	"GET /api/v1/services/{name}":               "services show",
	"POST /api/v1/services/{name}/map":          "services map",
	"POST /api/v1/services/{name}/remap":        "services remap",
	"GET /api/v1/sites":                         "site ls",
	"POST /api/v1/sites":                        "site add",
	"POST /api/v1/sites/{site}/pin-version":     "site pin-version",
	"POST /api/v1/enrollment-tokens":            "site tokens add",
	"GET /api/v1/enrollment-tokens":             "site tokens ls",
	"DELETE /api/v1/enrollment-tokens/{id}":     "site tokens revoke",
	"POST /api/v1/agents/{agent}/forget":        "agents forget",
	"GET /api/v1/agents":                        "agents ls",
	"POST /api/v1/agents/{agent}/approve":       "agents approve",
	"POST /api/v1/agents/{agent}/revoke":        "agents revoke",
	"POST /api/v1/agents/{agent}/control":       "agents ping", // and pause, resume, drain, logs
	"POST /api/v1/probes":                       "probe",
	"GET /api/v1/probe-kinds":                   "probe", // --help-params: the same contract, embedded
	"GET /api/v1/probe-kinds/{kind}":            "probe",
	"GET /api/v1/cis":                           "ci ls",
	"GET /api/v1/cis/{id}":                      "ci show",
	"GET /api/v1/cis/{id}/relations":            "ci rel",
	"GET /api/v1/cis/{id}/history":              "ci history",
	"GET /api/v1/cis/{id}/graph":                "ci graph",
	"POST /api/v1/cis/ingest":                   "ci ingest",
	"GET /api/v1/cmdb/counts":                   "ci counts",
	"GET /api/v1/cmdb/conflicts":                "ci conflicts",
	"GET /api/v1/cmdb/classes":                  "ci classes",
	"POST /api/v1/tokens":                       "tokens create",
	"GET /api/v1/tokens":                        "tokens ls",
	"DELETE /api/v1/tokens/{id}":                "tokens revoke",
	"POST /api/v1/credentials":                  "credentials add",
	"GET /api/v1/credentials":                   "credentials ls",
	"DELETE /api/v1/credentials/{name}":         "credentials rm",
	"GET /api/v1/hostkeys":                      "hostkeys ls",
	"DELETE /api/v1/hostkeys/{address}":         "hostkeys forget",
	"POST /api/v1/discovery/runs":               "discover",
	"GET /api/v1/discovery/runs":                "runs ls",
	"GET /api/v1/discovery/runs/{id}":           "runs show",
	"POST /api/v1/discovery/runs/{id}/cancel":   "runs cancel",
	"POST /api/v1/discovery/schedules":          "schedules add",
	"GET /api/v1/discovery/schedules":           "schedules ls",
	"DELETE /api/v1/discovery/schedules/{name}": "schedules rm",
	"POST /api/v1/discovery/classifiers/reload": "classifiers reload",

	"POST /api/v1/workflows":                               "workflow add",
	"GET /api/v1/workflows":                                "workflow ls",
	"GET /api/v1/workflows/{name}":                         "workflow show",
	"POST /api/v1/workflows/{name}/runs":                   "workflow run",
	"GET /api/v1/workflow-runs":                            "workflow runs ls",
	"GET /api/v1/workflow-runs/{id}":                       "workflow runs show",
	"GET /api/v1/workflow-runs/{id}/events":                "workflow runs show",
	"GET /api/v1/workflow-runs/{id}/steps/{step}/output":   "workflow runs show",
	"POST /api/v1/workflow-runs/{id}/cancel":               "workflow cancel",
	"POST /api/v1/workflow-runs/{id}/steps/{step}/approve": "workflow approve",

	"POST /api/v1/imports/runs":                  "import run",
	"GET /api/v1/imports/runs":                   "import runs ls",
	"GET /api/v1/imports/runs/{id}":              "import runs show",
	"GET /api/v1/imports/runs/{id}/rows":         "import runs show",
	"POST /api/v1/imports/runs/{id}/retransform": "import runs retransform",
	"POST /api/v1/imports/maps/validate":         "import maps check",
	"POST /api/v1/imports/maps":                  "import maps add",
	"GET /api/v1/imports/maps":                   "import maps ls",
	"GET /api/v1/imports/maps/{name}":            "import maps show",
	"POST /api/v1/imports/maps/test":             "import maps test",
	"POST /api/v1/imports/schedules":             "import schedules add",
	"GET /api/v1/imports/schedules":              "import schedules ls",
	"DELETE /api/v1/imports/schedules/{name}":    "import schedules rm",
	"POST /api/v1/imports/sources":               "import source add",
	"GET /api/v1/imports/sources":                "import source ls",
	"GET /api/v1/imports/sources/{name}":         "import source show",
	"DELETE /api/v1/imports/sources/{name}":      "import source rm",
	"POST /api/v1/imports/sources/{name}/runs":   "import run",
	"POST /api/v1/metrics":                       "metrics add",
	"GET /api/v1/metrics":                        "metrics ls",
	"DELETE /api/v1/metrics/{name}":              "metrics rm",
	"GET /api/v1/metric-series":                  "metrics series",
	"POST /api/v1/connectors":                    "connectors add",
	"GET /api/v1/connectors":                     "connectors ls",
	"DELETE /api/v1/connectors/{name}":           "connectors rm",
}

// Every route the gateway documents has a CLI command.
func TestEveryRouteHasACommand(t *testing.T) {
	cfg := startHub(t)
	tok, err := readToken(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+cfg.HTTPAddr+"/api/v1/openapi.json", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			route := strings.ToUpper(method) + " " + path
			documented[route] = true
			cmd, ok := commandOf[route]
			if !ok {
				t.Errorf("%s has no CLI command: add one and list it in commandOf", route)
				continue
			}
			if !cli.HasCommand(strings.Fields(cmd)...) {
				t.Errorf("%s: command `outpost %s` does not exist", route, cmd)
			}
		}
	}
	for route := range commandOf {
		if !documented[route] {
			t.Errorf("commandOf lists %s, which the gateway does not serve", route)
		}
	}
}

// Exit codes: 0 ok, 1 failure, 2 usage — for cobra's own argument errors too.
func TestUsageExitCodes(t *testing.T) {
	for _, args := range [][]string{
		{"ci", "frob"},        // unknown subcommand of a group
		{"agents", "approve"}, // missing argument
		{"agents", "approve", "a", "b"},
		{"tokens", "ls", "--limit"}, // flag without its value
		{"tokens", "ls", "--limit", "many"},
		{"dlq", "ls", "extra"},
		{"completion", "tcsh"},
	} {
		if code, _, errs := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs)
		}
	}
	if code, out, _ := run(t, "ci"); code != 0 || !strings.Contains(out, "Available Commands") {
		t.Errorf("a group alone prints its help: exit %d %s", code, out)
	}
}

func TestCompletionScripts(t *testing.T) {
	for shell, marker := range map[string]string{"bash": "__start_outpost", "zsh": "#compdef outpost", "fish": "complete -c outpost"} {
		code, out, errs := run(t, "completion", shell)
		if code != 0 || !strings.Contains(out, marker) {
			t.Errorf("completion %s: exit %d, %d bytes, want %q (%s)", shell, code, len(out), marker, errs)
		}
	}
}

// The list commands follow next_cursor: every item once, whatever the page size; --limit
// stops early; -o json is one document in the shape of a page.
func TestListCommandsWalkPages(t *testing.T) {
	cfg := startHub(t)
	server := "http://" + cfg.HTTPAddr
	old := cli.SetPageSize(2)
	t.Cleanup(func() { cli.SetPageSize(old) })
	for i := range 5 {
		name := fmt.Sprintf("pg%d", i)
		if code, _, errs := run(t, "--server", server, "--data", cfg.DataDir, "site", "add", name, "--range", fmt.Sprintf("127.0.%d.0/24", 100+i)); code != 0 {
			t.Fatalf("site add %s: %s", name, errs)
		}
		if code, _, errs := run(t, "--server", server, "--data", cfg.DataDir, "tokens", "create", "--name", name); code != 0 {
			t.Fatalf("tokens create: %s", errs)
		}
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		name := fmt.Sprintf("pg%d", i)
		if code, _, errs := run(t, "--server", server, "--data", cfg.DataDir, "schedules", "add", "--name", name, "--site", name, "--cron", "@every 24h"); code != 0 {
			t.Fatalf("schedules add: %s", errs)
		}
		if code, _, errs := run(t, "--server", server, "--data", cfg.DataDir, "credentials", "add", "--name", name, "--type", "ssh", "--site", name, "--username", "u", "--secret-file", secret); code != 0 {
			t.Fatalf("credentials add: %s", errs)
		}
	}
	for _, c := range []struct{ cmd, field string }{{"schedules", "schedules"}, {"credentials", "credentials"}, {"agents", "agents"}, {"runs", "runs"}} {
		code, out, errs := run(t, "--server", server, "--data", cfg.DataDir, c.cmd, "ls", "-o", "json")
		var doc map[string][]map[string]any
		if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || doc[c.field] == nil {
			t.Fatalf("%s ls -o json: exit %d %v %s %s", c.cmd, code, err, out, errs)
		}
		if (c.cmd == "schedules" || c.cmd == "credentials") && len(doc[c.field]) != 3 {
			t.Fatalf("%s over pages of 2: %d, want 3", c.cmd, len(doc[c.field]))
		}
		if code, out, errs := run(t, "--server", server, "--data", cfg.DataDir, c.cmd, "ls"); code != 0 || out == "" {
			t.Fatalf("%s ls table: exit %d %s", c.cmd, code, errs)
		}
	}
	code, out, errs := run(t, "--server", server, "--data", cfg.DataDir, "site", "ls", "-o", "json")
	if code != 0 {
		t.Fatalf("site ls: %s", errs)
	}
	var sites struct {
		Sites []struct{ Name string } `json:"sites"`
	}
	if err := json.Unmarshal([]byte(out), &sites); err != nil {
		t.Fatalf("site ls -o json: %v %s", err, out)
	}
	var names []string
	for _, s := range sites.Sites {
		names = append(names, s.Name)
	}
	// The hub has its own site (hub) next to the five.
	if got := strings.Join(names, ","); !strings.Contains(got, "pg0,pg1,pg2,pg3,pg4") || len(names) != 6 {
		t.Fatalf("sites over pages of 2: %s", got)
	}
	code, out, _ = run(t, "--server", server, "--data", cfg.DataDir, "tokens", "ls", "--limit", "3", "-o", "json")
	var toks struct {
		Tokens []struct{ Name string } `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(out), &toks); code != 0 || err != nil || len(toks.Tokens) != 3 {
		t.Fatalf("tokens ls --limit 3: exit %d, %d tokens (%v)", code, len(toks.Tokens), err)
	}
	code, out, _ = run(t, "--server", server, "--data", cfg.DataDir, "tokens", "ls")
	if code != 0 || strings.Count(out, "\n") != 7 { // header, admin, five
		t.Fatalf("tokens ls table: exit %d\n%s", code, out)
	}
	// The writes above are in the audit trail, and the DLQ is empty.
	code, out, _ = run(t, "--server", server, "--data", cfg.DataDir, "audit", "ls", "-o", "json")
	var audit struct {
		Events []struct{ Action string } `json:"events"`
	}
	if err := json.Unmarshal([]byte(out), &audit); code != 0 || err != nil || len(audit.Events) < 10 {
		t.Fatalf("audit ls: exit %d, %d events (%v)", code, len(audit.Events), err)
	}
	code, out, _ = run(t, "--server", server, "--data", cfg.DataDir, "dlq", "ls", "-o", "json")
	if code != 0 || strings.TrimSpace(out) != `{"items":[]}` {
		t.Fatalf("dlq ls: exit %d %s", code, out)
	}
	if code, out, _ = run(t, "--server", server, "--data", cfg.DataDir, "dlq", "ls"); code != 0 || !strings.Contains(out, "SEQ") {
		t.Fatalf("dlq ls table: exit %d %s", code, out)
	}
}

func TestProgressBar(t *testing.T) {
	for _, c := range []struct {
		done, total int
		want        string
	}{
		{0, 0, "[··········]   0%"},
		{5, 10, "[#####·····]  50%"},
		{12, 10, "[##########] 100%"},
	} {
		if got := cli.ProgressBar(c.done, c.total, 10); got != c.want {
			t.Errorf("%d/%d: %q, want %q", c.done, c.total, got, c.want)
		}
	}
}
