package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corrapi "github.com/outpost-dev/outpost/libs/api/correlation"
	api "github.com/outpost-dev/outpost/libs/api/importer"
	orchapi "github.com/outpost-dev/outpost/libs/api/orchestration"
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

// TestReplayChanges replays CMDB change events (CHANGES) into orchestration through the
// gateway: the cmdb_change runs the live trigger started are found, not started again, by
// one replay and by the next; a dry run says so too. Flags that do not choose change events
// are refused.
func TestReplayChanges(t *testing.T) {
	cfg := startHub(t)
	dir := t.TempDir()
	server := "http://" + cfg.HTTPAddr
	cli := func(args ...string) string {
		t.Helper()
		code, out, errs := run(t, append([]string{"--server", server, "--data", cfg.DataDir}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		return out
	}
	wf := filepath.Join(dir, "on-new.yaml")
	if err := os.WriteFile(wf, []byte(`name: on-new
inputs: {ci: {required: true}}
on:
  cmdb_change: {class: linux_server, op: created}
  inputs: {ci: '${{ event.ci }}'}
steps:
  - {id: hold, kind: approval}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cli("workflow", "add", wf)
	payload := filepath.Join(dir, "cis.json")
	if err := os.WriteFile(payload, []byte(`{"source": "import", "items": [
  {"ref": "a", "class": "linux_server", "attributes": {"name": "rp-a", "serial_number": "RP-A"}},
  {"ref": "b", "class": "linux_server", "attributes": {"name": "rp-b", "serial_number": "RP-B"}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cli("ci", "ingest", payload)
	triggered := func() ([]string, error) {
		code, out, errs := run(t, "--server", server, "--data", cfg.DataDir, "workflow", "runs", "ls", "-o", "json")
		if code != 0 {
			return nil, fmt.Errorf("workflow runs ls: exit %d: %s", code, errs)
		}
		var page orchapi.RunsResponse
		if err := json.Unmarshal([]byte(out), &page); err != nil || page.Runs == nil {
			if err := json.Unmarshal([]byte(out), &page.Runs); err != nil {
				return nil, fmt.Errorf("workflow runs ls: %v in %q", err, out)
			}
		}
		var ids []string
		for _, r := range page.Runs {
			if r.Workflow == "on-new" {
				ids = append(ids, r.ID)
			}
		}
		sort.Strings(ids)
		return ids, nil
	}
	var live []string
	deadline := time.Now().Add(60 * time.Second)
	for {
		ids, err := triggered()
		if err == nil && len(ids) == 2 {
			live = ids
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live trigger started runs %v (%v) within 60 s, want 2", ids, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	for _, name := range []string{"first replay", "second replay"} {
		t.Run(name, func(t *testing.T) {
			var r orchapi.ReplayReply
			out := cli("replay", "--stream", "CHANGES", "--to", "orchestration", "--class", "linux_server", "-o", "json")
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("%v in %q", err, out)
			}
			if r.Changes < 2 || r.Matched != 2 || r.Started != 0 || r.Existed != 2 {
				t.Fatalf("replay: %d changes, %d matched, %d started, %d existed; want 2 matched, both existing: %+v", r.Changes, r.Matched, r.Started, r.Existed, r.Firings)
			}
			for _, f := range r.Firings {
				if !slices.Contains(live, f.Run) {
					t.Errorf("firing %+v names a run the live trigger did not start (%v)", f, live)
				}
			}
			if ids, err := triggered(); err != nil || !slices.Equal(ids, live) {
				t.Fatalf("after the replay runs %v (%v), want the live ones %v", ids, err, live)
			}
		})
	}
	out := cli("replay", "--stream", "CHANGES", "--to", "orchestration", "--dry-run", "--until", "2006-01-02T15:04:05Z")
	if !strings.Contains(out, "0 change events, 0 matched") {
		t.Errorf("dry run until 2006: %q, want nothing read", out)
	}
	out = cli("replay", "--stream", "CHANGES", "--to", "orchestration", "--dry-run")
	if !strings.Contains(out, "0 would start, 2 had started already") {
		t.Errorf("dry run: %q, want both runs found", out)
	}

	refused := []struct {
		name string
		args []string
		want string
	}{
		{"run", []string{"--run", "x"}, "--run: change events are chosen by"},
		{"since and from-seq", []string{"--since", "1h", "--from-seq", "3"}, "give one of them"},
		{"another stream", []string{"--stream", "EVENTS"}, "orchestration reads CHANGES"},
		{"bad until", []string{"--until", "soon"}, `until "soon"`},
	}
	for _, tc := range refused {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			code, _, errs := run(t, append([]string{"--server", server, "--data", cfg.DataDir, "replay", "--to", "orchestration"}, tc.args...)...)
			if code == 0 || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stderr %q: want a refusal saying %q", code, errs, tc.want)
			}
		})
	}
}

// TestReplayEvents replays stored events (EVENTS) into correlation through the gateway:
// the alert took them live, so two replays and a dry run apply nothing, and a closed
// alert stays closed with its count (a replay never reopens one). Flags that do not choose
// events are refused.
func TestReplayEvents(t *testing.T) {
	cfg := startHub(t)
	server := "http://" + cfg.HTTPAddr
	cli := func(args ...string) string {
		t.Helper()
		code, out, errs := run(t, append([]string{"--server", server, "--data", cfg.DataDir}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		return out
	}
	for range 3 {
		cli("events", "send", "--node", "rp-web", "--type", "cpu", "--severity", "major", "--message", "load high")
	}
	alert := func() (corrapi.Alert, error) {
		code, out, errs := run(t, "--server", server, "--data", cfg.DataDir, "alerts", "ls", "--node", "rp-web", "-o", "json")
		if code != 0 {
			return corrapi.Alert{}, fmt.Errorf("alerts ls: exit %d: %s", code, errs)
		}
		var page corrapi.AlertsListResponse
		if err := json.Unmarshal([]byte(out), &page); err != nil || page.Items == nil {
			if err := json.Unmarshal([]byte(out), &page.Items); err != nil {
				return corrapi.Alert{}, fmt.Errorf("alerts ls: %v in %q", err, out)
			}
		}
		if len(page.Items) != 1 {
			return corrapi.Alert{}, fmt.Errorf("%d alerts for rp-web, want 1: %+v", len(page.Items), page.Items)
		}
		return page.Items[0], nil
	}
	var a corrapi.Alert
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		a, err = alert()
		if err == nil && a.Count == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live pipeline: alert %+v (%v) within 60 s, want count 3", a, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cli("alerts", "close", a.ID)

	for _, name := range []string{"first replay", "second replay"} {
		t.Run(name, func(t *testing.T) {
			var r corrapi.ReplayReply
			out := cli("replay", "--stream", "EVENTS", "--to", "correlation", "-o", "json")
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("%v in %q", err, out)
			}
			if r.Events < 3 || r.Applied != 0 || r.Skipped != r.Events-r.Ignored-r.Invalid || r.Alerts != 0 {
				t.Fatalf("replay: %+v; want every event skipped (taken live), nothing applied", r)
			}
			got, err := alert()
			if err != nil || got.ID != a.ID || got.Count != 3 || got.State != corrapi.StateClosed {
				t.Fatalf("after the replay: %+v (%v); want %s closed with count 3", got, err, a.ID)
			}
		})
	}
	out := cli("replay", "--stream", "EVENTS", "--to", "correlation", "--dry-run", "--from-seq", "1", "--to-seq", "1000000")
	if !strings.Contains(out, "0 would be applied") || !strings.Contains(out, "alerts touched: 0") {
		t.Errorf("dry run: %q, want nothing to apply", out)
	}
	out = cli("replay", "--stream", "EVENTS", "--to", "correlation", "--dry-run", "--until", "2006-01-02T15:04:05Z")
	if !strings.Contains(out, "0 messages, 0 events") {
		t.Errorf("dry run until 2006: %q, want nothing read", out)
	}

	refused := []struct {
		name string
		args []string
		want string
	}{
		{"run", []string{"--run", "x"}, "--run: events are chosen by"},
		{"since and from-seq", []string{"--since", "1h", "--from-seq", "3"}, "give one of them"},
		{"class", []string{"--class", "linux_server"}, "--class is for --to orchestration"},
		{"another stream", []string{"--stream", "CHANGES"}, "correlation reads EVENTS"},
		{"bad since", []string{"--since", "soon"}, `since "soon"`},
		{"to-seq before from-seq", []string{"--from-seq", "9", "--to-seq", "3"}, "from_seq 9 is after to_seq 3"},
	}
	for _, tc := range refused {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			code, _, errs := run(t, append([]string{"--server", server, "--data", cfg.DataDir, "replay", "--to", "correlation"}, tc.args...)...)
			if code == 0 || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stderr %q: want a refusal saying %q", code, errs, tc.want)
			}
		})
	}
}
