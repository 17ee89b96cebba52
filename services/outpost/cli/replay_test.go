package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// TestReplayImports replays an import run's staged rows (IMPORTS) into the importer: with the
// run's own map nothing is inserted again (the CMDB's identification finds the CIs the run
// made); with a changed map the CIs are updated, still none duplicated. Flags that do not fit
// an import set are refused, each with what to do instead.
func TestReplayImports(t *testing.T) {
	cfg := startHub(t)
	dir := t.TempDir()
	server := "http://" + cfg.HTTPAddr
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hostsMap := "name: hosts\ntarget: {class: linux_server}\ncoalesce: [serial_number]\nfields:\n  name: 'row.host'\n  serial_number: 'row.sn'\n"
	mapPath := write("hosts.yaml", hostsMap)
	csvPath := write("hosts.csv", "host,sn,cpus\nr1,RSN-1,2\nr2,RSN-2,4\nr3,RSN-3,8\n")
	runJSON := func(args ...string) api.Run {
		t.Helper()
		code, out, errs := run(t, append([]string{"--server", server, "--data", cfg.DataDir}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		var r api.Run
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%v: %v in %q", args, err, out)
		}
		return r
	}
	first := runJSON("import", "run", "--file", csvPath, "--map", mapPath, "--wait", "-o", "json")
	if first.State != api.StateCompleted || first.Counters != (api.Counters{Staged: 3, Inserted: 3}) {
		t.Fatalf("import run: %+v", first)
	}

	tests := []struct {
		name string
		args []string
		want api.Counters
	}{
		{"the run's own map: nothing new", nil, api.Counters{Staged: 3, Unchanged: 3}},
		{"again: still nothing new", nil, api.Counters{Staged: 3, Unchanged: 3}},
		{"a changed map: updated, none duplicated", []string{"--map", write("hosts2.yaml", hostsMap+"  cpu_count: 'row.cpus'\n")},
			api.Counters{Staged: 3, Updated: 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runJSON(append([]string{"replay", "--stream", "IMPORTS", "--run", first.ID, "--to", "importer", "-o", "json"}, tc.args...)...)
			if r.ID == first.ID || r.Set != first.Set || r.State != api.StateCompleted || r.Counters != tc.want {
				t.Fatalf("replay run %s of set %s, %s: counters %+v, want a new completed run of set %s with %+v", r.ID, r.Set, r.State, r.Counters, first.Set, tc.want)
			}
		})
	}

	refused := []struct {
		name string
		args []string
		want string
	}{
		{"dry run", []string{"--run", first.ID, "--dry-run"}, "outpost import maps test"},
		{"since", []string{"--run", first.ID, "--since", "10m"}, "--since: an import set is replayed whole"},
		{"no run", nil, "--to importer needs --run"},
		{"another stream", []string{"--run", first.ID, "--stream", "EVENTS"}, "importer reads IMPORTS"},
	}
	for _, tc := range refused {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			code, _, errs := run(t, append([]string{"--server", server, "--data", cfg.DataDir, "replay", "--to", "importer"}, tc.args...)...)
			if code == 0 || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stderr %q: want a refusal saying %q", code, errs, tc.want)
			}
		})
	}
	if code, _, errs := run(t, "--server", server, "--data", cfg.DataDir, "replay", "--to", "discovery", "--run", "x", "--map", mapPath); code == 0 ||
		!strings.Contains(errs, "--map is for --to importer") {
		t.Errorf("--map with discovery: exit %d, %q", code, errs)
	}
}
