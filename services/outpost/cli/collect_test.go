package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// Metric definitions and pull connectors from YAML files against a running hub: a bad file
// is refused before anything is sent, with every problem as file:line; a good one (a list,
// several documents) is stored and listed as a table and as one JSON document; rm removes
// by name and an unknown name says how to list them; a connector takes an admin.
func TestMetricsAndConnectorsCommands(t *testing.T) {
	cfg := startHub(t)
	server := "http://" + cfg.HTTPAddr
	cli := func(args ...string) (int, string, string) {
		return run(t, append([]string{"--server", server, "--data", cfg.DataDir}, args...)...)
	}
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// eventually: the service lists what its definitions watch has seen, a moment after a write.
	eventually := func(what string, f func() error) {
		t.Helper()
		var err error
		for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if err = f(); err == nil {
				return
			}
		}
		t.Fatalf("%s: %v", what, err)
	}

	for _, c := range []struct {
		name, file string
		want       []string
	}{
		{"unknown key and every problem of every definition", "- name: load\n  site: hub\n  kind: ping\n  targets: [127.0.0.1]\n  interval: 0s\n  valu: x\n- name: Bad\n  site: hub\n  kind: snmp_get\n  targets: [127.0.0.1]\n  interval: 1h\n",
			[]string{"bad.yaml:1: unknown field \"valu\"", "bad.yaml:1: kind \"ping\"", "bad.yaml:1: interval \"0s\"", "bad.yaml:7:", `name "Bad"`, "value: snmp_get needs the OID", "nothing was sent"}},
		{"validation problems", "name: load\nsite: hub\nkind: ping\ninterval: 0s\n",
			[]string{"bad.yaml:1: kind \"ping\"", "bad.yaml:1: targets:", "bad.yaml:1: interval \"0s\""}},
		{"not a mapping", "just a string\n", []string{"bad.yaml:1: want a definition (a mapping) or a list of them"}},
		{"empty", "# nothing\n", []string{"no definition in the file"}},
	} {
		code, out, errs := cli("metrics", "add", "-f", write("bad.yaml", c.file))
		if code != 2 || !containsAll(errs, c.want...) {
			t.Errorf("%s: metrics add: exit %d %s\n%s, want exit 2 naming %q", c.name, code, out, errs, c.want)
		}
	}
	if code, _, errs := cli("metrics", "add"); code != 2 || !strings.Contains(errs, "-f FILE") {
		t.Errorf("metrics add without -f: exit %d %s", code, errs)
	}
	code, _, errs := cli("metrics", "ls", "-o", "json")
	if code != 0 {
		t.Fatalf("metrics ls: exit %d %s", code, errs)
	}

	// A list in one document and a second document: three definitions. Interval 1h: the
	// collection they start is not what this test looks at.
	good := write("metrics.yaml", `- name: load
  site: hub
  kind: http_request
  targets: [127.0.0.1]
  interval: 1h
  params: {port: 9, path: /status.json}
  value: cpu.load
- name: ifin
  site: hub
  kind: snmp_get
  targets: [127.0.0.1, 127.0.0.2]
  interval: 1h
  value: 1.3.6.1.2.1.2.2.1.10.1
  counter: true
---
name: uptime
site: hub
kind: ssh_exec
targets: [127.0.0.1]
interval: 1h
value: 'up (\d+) days'
baseline: {threshold: 3, min_samples: 20, severity: minor}
`)
	code, out, errs := cli("metrics", "add", "-f", good)
	if code != 0 || !containsAll(out, "metric load: http_request on hub every 1h, 1 target(s)", "metric ifin:", "metric uptime:") {
		t.Fatalf("metrics add: exit %d %s %s", code, out, errs)
	}
	eventually("metrics ls lists the three", func() error {
		code, out, errs := cli("metrics", "ls", "-o", "json")
		var l api.MetricDefsResponse
		if err := json.Unmarshal([]byte(out), &l); code != 0 || err != nil {
			return fmt.Errorf("exit %d %v %s %s", code, err, out, errs)
		}
		var names []string
		for _, d := range l.Items {
			names = append(names, d.Name)
		}
		if strings.Join(names, ",") != "ifin,load,uptime" {
			return fmt.Errorf("names %v, want ifin,load,uptime", names)
		}
		if d := l.Items[2]; d.Baseline.Threshold != 3 || d.Baseline.Severity != "minor" || d.Value != `up (\d+) days` {
			return fmt.Errorf("uptime stored as %+v", d)
		}
		return nil
	})
	if code, out, errs := cli("metrics", "ls"); code != 0 || !containsAll(out, "NAME", "ifin", "snmp_get", "127.0.0.1,127.0.0.2", "true") {
		t.Fatalf("metrics ls table: exit %d %s %s", code, out, errs)
	}
	code, out, errs = cli("metrics", "series", "--metric", "ifin", "-o", "json")
	var series api.SeriesListResponse
	if err := json.Unmarshal([]byte(out), &series); code != 0 || err != nil {
		t.Fatalf("metrics series -o json: exit %d %v %s %s", code, err, out, errs)
	}
	for _, s := range series.Items {
		if s.Metric != "ifin" {
			t.Fatalf("series --metric ifin lists %+v", s)
		}
	}
	if code, out, errs := cli("metrics", "series"); code != 0 || !strings.Contains(out, "METRIC") {
		t.Fatalf("metrics series table: exit %d %s %s", code, out, errs)
	}
	if code, out, errs := cli("metrics", "rm", "uptime"); code != 0 || strings.TrimSpace(out) != "metric uptime removed" {
		t.Fatalf("metrics rm: exit %d %s %s", code, out, errs)
	}
	if code, _, errs := cli("metrics", "rm", "nosuch"); code != 1 || !strings.Contains(errs, "outpost metrics ls") {
		t.Fatalf("metrics rm of an unknown name: exit %d %s, want 1 and how to list them", code, errs)
	}

	// Connectors: an operator may add metrics but not connectors (a standing data source
	// read with a stored credential, as import sources).
	conn := write("tool.yaml", `name: tool
site: hub
url: http://127.0.0.1:9/api/events
interval: 1h
records: data.events
since_param: since
fields: {id: id, node: host, type: check, severity: state, message: output, time: when}
additional: {ticket: meta.ticket}
severities: {5: critical, OK: clear}
`)
	code, out, errs = cli("tokens", "create", "--role", "operator", "--name", "op", "-o", "json")
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(out), &tok); code != 0 || err != nil {
		t.Fatalf("tokens create: exit %d %v %s %s", code, err, out, errs)
	}
	opTok := tok.Token
	if code, _, errs := run(t, "--server", server, "--token", opTok, "connectors", "add", "-f", conn); code != 1 || !strings.Contains(errs, "admin") {
		t.Fatalf("connectors add as an operator: exit %d %s, want refused naming the admin role", code, errs)
	}
	if code, out, errs := run(t, "--server", server, "--token", opTok, "metrics", "add", "-f", good); code != 0 {
		t.Fatalf("metrics add as an operator: exit %d %s %s", code, out, errs)
	}
	if code, _, errs := cli("connectors", "add", "-f", write("badconn.yaml", "name: tool\nsite: hub\nurl: ftp://x\ninterval: 1h\nheaders: {Authorization: Bearer x}\nfields: {host: h}\nseverities: {x: awful}\n")); code != 2 ||
		!containsAll(errs, "badconn.yaml:1: url", "headers.Authorization: not allowed", "map node or message_key", "fields.host: unknown event field", "severities.x") {
		t.Fatalf("a bad connector: exit %d %s, want every problem", code, errs)
	}
	code, out, errs = cli("connectors", "add", "-f", conn, "-o", "json")
	var added struct{ Items []api.Connector }
	if err := json.Unmarshal([]byte(out), &added); code != 0 || err != nil || len(added.Items) != 1 || added.Items[0].Severities["5"] != "critical" {
		t.Fatalf("connectors add -o json: exit %d %v %s %s", code, err, out, errs)
	}
	eventually("connectors ls lists tool", func() error {
		code, out, errs := cli("connectors", "ls")
		if code != 0 || !containsAll(out, "NAME", "tool", "http://127.0.0.1:9/api/events", "1h") {
			return fmt.Errorf("exit %d %s %s", code, out, errs)
		}
		return nil
	})
	if code, out, errs := cli("connectors", "rm", "tool"); code != 0 || strings.TrimSpace(out) != "connector tool removed" {
		t.Fatalf("connectors rm: exit %d %s %s", code, out, errs)
	}
	eventually("connectors ls is empty", func() error {
		code, out, errs := cli("connectors", "ls", "-o", "json")
		if code != 0 || strings.TrimSpace(out) != `{"items":[]}` {
			return fmt.Errorf("exit %d %s %s", code, out, errs)
		}
		return nil
	})
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
