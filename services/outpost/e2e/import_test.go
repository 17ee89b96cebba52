package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

const importMap = `name: e2e-servers
target: {class: linux_server}
coalesce: [serial_number]
fields:
  name: 'row.host'
  serial_number: 'row.serial'
  ram_mb: 'int(row.ram_gb) * 1024'
  os: 'row.os'
`

type importRecord struct{ host, serial, ram, os string }

func importRecords(n int) []importRecord {
	out := make([]importRecord, n)
	for i := range out {
		out[i] = importRecord{fmt.Sprintf("e2e-%04d", i), fmt.Sprintf("E2ESN%06d", i*7919%1000003), fmt.Sprint(4 << (i % 4)), []string{"Debian 12", "Rocky Linux 9"}[i%2]}
	}
	return out
}

func writeCSV(t *testing.T, path string, recs []importRecord, extra string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("\xEF\xBB\xBFhost;serial;ram_gb;os\r\n") // BOM and semicolons, as spreadsheet exports write
	for _, r := range recs {
		fmt.Fprintf(&b, "%s;%s;%s;%s\r\n", r.host, r.serial, r.ram, r.os)
	}
	b.WriteString(extra)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeXLSX(t *testing.T, path string, recs []importRecord) {
	t.Helper()
	f := excelize.NewFile()
	_ = f.SetSheetName("Sheet1", "servers")
	_ = f.SetSheetRow("servers", "A1", &[]any{"exported by e2e"}) // a title row: the header is row 2
	_ = f.SetSheetRow("servers", "A2", &[]any{"host", "serial", "ram_gb", "os"})
	for i, r := range recs {
		ram := 0
		fmt.Sscan(r.ram, &ram)
		if err := f.SetSheetRow("servers", fmt.Sprintf("A%d", i+3), &[]any{r.host, r.serial, ram, r.os}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.SaveAs(path); err != nil {
		t.Fatal(err)
	}
}

// outpost runs the CLI against the hub.
func (h *testHub) outpost(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	args = append([]string{"--server", "http://" + h.http, "--data", h.dir}, args...)
	cmd := exec.Command(filepath.Join(binDir, "outpost"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("outpost %s: %v: %s", strings.Join(args[4:], " "), err, stderr.String())
	}
	return out, nil
}

func (h *testHub) importRun(t testing.TB, args ...string) api.Run {
	t.Helper()
	out, err := h.outpost(t, append([]string{"import", "run", "--wait", "-o", "json"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var run api.Run
	if err := json.Unmarshal(out, &run); err != nil {
		t.Fatalf("import run output: %v: %s", err, out)
	}
	return run
}

// A CSV and an XLSX of the same records go through `outpost up` into the CMDB: the first
// inserts every row, the second finds them all unchanged; a bad row is an error at its
// line and the run goes on; a changed map re-transforms the staged rows without an upload.
func TestImportFilesThroughTheHub(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	dir := t.TempDir()
	recs := importRecords(300)
	mapPath := filepath.Join(dir, "map.yaml")
	if err := os.WriteFile(mapPath, []byte(importMap), 0o600); err != nil {
		t.Fatal(err)
	}
	csvPath, xlsxPath := filepath.Join(dir, "servers.csv"), filepath.Join(dir, "servers.xlsx")
	writeCSV(t, csvPath, recs, "bad-1;BADSN1;lots;Debian 12\r\nnoserial;;8;Debian 12\r\n")
	writeXLSX(t, xlsxPath, recs)

	first := h.importRun(t, "--file", csvPath, "--map", mapPath)
	want := api.Counters{Staged: 302, Inserted: 300, Error: 1, Skipped: 1}
	if first.State != api.StateCompleted || first.Counters != want {
		t.Fatalf("CSV run: %s %s %+v, want completed %+v", first.State, first.Reason, first.Counters, want)
	}
	second := h.importRun(t, "--file", xlsxPath, "--map", mapPath, "--header-row", "2")
	if second.State != api.StateCompleted || second.Counters != (api.Counters{Staged: 300, Unchanged: 300}) {
		t.Fatalf("XLSX run after the CSV: %s %s %+v, want 300 unchanged", second.State, second.Reason, second.Counters)
	}
	out, err := h.outpost(t, "ci", "ls", "--class", "linux_server", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var cis []map[string]any
	if err := json.Unmarshal(out, &cis); err != nil || len(cis) != 300 {
		t.Fatalf("CMDB holds %d servers (%v), want 300", len(cis), err)
	}

	// The bad row: its line, its reason, its columns.
	out, err = h.outpost(t, "import", "runs", "show", first.ID, "--rows", "error", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var shown struct {
		Run  api.Run         `json:"run"`
		Rows []api.RowResult `json:"rows"`
	}
	if err := json.Unmarshal(out, &shown); err != nil || len(shown.Rows) != 1 {
		t.Fatalf("error rows: %v %s", err, out)
	}
	bad := shown.Rows[0]
	if bad.Position.Line != 302 || !strings.Contains(bad.Reason, "line 302") || !strings.Contains(bad.Reason, "fields.ram_mb") || bad.Columns["ram_gb"] != "lots" {
		t.Fatalf("error row: %+v", bad)
	}
	out, err = h.outpost(t, "import", "runs", "show", first.ID, "--rows", "skipped")
	if err != nil || !strings.Contains(string(out), "no value for coalesce attribute serial_number") || !strings.Contains(string(out), "line 303") {
		t.Fatalf("skipped rows: %v %s", err, out)
	}

	// Re-transform the CSV's staged rows with a map that also sets the OS version: every
	// server is updated, nothing uploaded again, the bad row still an error.
	changed := strings.Replace(importMap, "  os: 'row.os'\n", "  os: 'row.os'\n  os_version: 'split(row.os, \" \")[-1]'\n", 1)
	if err := os.WriteFile(mapPath, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = h.outpost(t, "import", "runs", "retransform", first.ID, "--map", mapPath, "--wait", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var re api.Run
	if err := json.Unmarshal(out, &re); err != nil || re.Set != first.ID || re.Counters != (api.Counters{Staged: 302, Updated: 300, Error: 1, Skipped: 1}) {
		t.Fatalf("re-transform: %v %+v", err, re)
	}

	// A bad map is refused before the file is stored, naming file, line and field.
	if err := os.WriteFile(mapPath, []byte(strings.Replace(importMap, "ram_mb:", "ram:", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = h.outpost(t, "import", "run", "--file", csvPath, "--map", mapPath)
	if err == nil || !strings.Contains(err.Error(), `map.yaml:7: fields.ram: class linux_server has no attribute "ram" (did you mean ram_mb?)`) {
		t.Fatalf("bad map: %v", err)
	}

	// The raw-body form (file as the body, map in the query), JSON Lines, coalesce [] —
	// every row is a new CI, run after run.
	always := "name: always\ntarget: {class: linux_server}\ncoalesce: []\nfields: {name: 'row.n', os: 'row.os'}\n"
	body := "{\"n\":\"kiosk-1\",\"os\":\"Debian 12\"}\n{\"n\":\"kiosk-2\"}\n"
	for i := range 2 {
		q := url.Values{"map": {always}, "map_file": {"always.yaml"}, "filename": {"kiosks.jsonl"}}
		req, _ := http.NewRequest("POST", "http://"+h.http+"/api/v1/imports/runs?"+q.Encode(), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+h.token(t))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var run api.Run
		err = json.NewDecoder(resp.Body).Decode(&run)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("raw upload: %d %v", resp.StatusCode, err)
		}
		eventually(t, 30*time.Second, func() error {
			h.mustAPI(t, "GET", "/api/v1/imports/runs/"+run.ID, nil, &run)
			if !api.Terminal(run.State) {
				return fmt.Errorf("state %s", run.State)
			}
			return nil
		})
		if run.State != api.StateCompleted || run.Counters != (api.Counters{Staged: 2, Inserted: 2}) {
			t.Fatalf("coalesce [] run %d: %s %s %+v, want 2 inserted", i+1, run.State, run.Reason, run.Counters)
		}
	}
}

// A hub killed in the middle of an import resumes the run after its restart: every row gets
// exactly one outcome, and the CMDB holds each record once.
func TestImportResumesAfterHubKill(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	dir := t.TempDir()
	const n = 6000
	recs := importRecords(n)
	mapPath, csvPath := filepath.Join(dir, "map.yaml"), filepath.Join(dir, "big.csv")
	if err := os.WriteFile(mapPath, []byte(importMap), 0o600); err != nil {
		t.Fatal(err)
	}
	writeCSV(t, csvPath, recs, "")
	out, err := h.outpost(t, "import", "run", "--file", csvPath, "--map", mapPath, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var run api.Run
	if err := json.Unmarshal(out, &run); err != nil {
		t.Fatal(err)
	}
	// Kill once some rows, not all, have their outcome.
	eventually(t, 60*time.Second, func() error {
		var r api.Run
		h.mustAPI(t, "GET", "/api/v1/imports/runs/"+run.ID, nil, &r)
		if d := r.Counters.Done(); d < 200 || api.Terminal(r.State) {
			return fmt.Errorf("%d rows done, state %s", d, r.State)
		}
		return nil
	})
	h.proc.kill(t)
	h.restart(t)
	var final api.Run
	eventually(t, 120*time.Second, func() error {
		h.mustAPI(t, "GET", "/api/v1/imports/runs/"+run.ID, nil, &final)
		if !api.Terminal(final.State) {
			return fmt.Errorf("state %s, %d of %d rows done", final.State, final.Counters.Done(), final.Counters.Staged)
		}
		return nil
	})
	// A row the CMDB ingested just before the kill but whose receipt it had not sent is
	// ingested again after the restart and reported unchanged by the CMDB; the importer
	// still counts it inserted, from the CI's own history: every row is inserted, once.
	c := final.Counters
	if final.State != api.StateCompleted || c.Staged != n || c.Inserted != n || c.Done() != n {
		var errs api.RowsResponse
		h.mustAPI(t, "GET", "/api/v1/imports/runs/"+run.ID+"/rows?outcome=error&limit=5", nil, &errs)
		t.Fatalf("resumed run: %s %s %+v, want %d inserted or unchanged; errors: %+v", final.State, final.Reason, c, n, errs.Rows)
	}
	// Every row's outcome once: the outcome log holds n rows, no row twice.
	seen := map[int64]api.RowResult{}
	cursor := ""
	for {
		var rows api.RowsResponse // fresh: next_cursor is left out on the last page
		h.mustAPI(t, "GET", "/api/v1/imports/runs/"+run.ID+"/rows?limit=1000&cursor="+cursor, nil, &rows)
		for _, r := range rows.Rows {
			if first, dup := seen[r.N]; dup {
				t.Fatalf("row %d has two outcomes: %+v and %+v (cursor %q)", r.N, first, r, cursor)
			}
			seen[r.N] = r
		}
		if rows.NextCursor == "" {
			break
		}
		cursor = rows.NextCursor
	}
	if len(seen) != n {
		t.Fatalf("%d rows with an outcome, want %d", len(seen), n)
	}
	out, err = h.outpost(t, "ci", "ls", "--class", "linux_server", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var cis []map[string]any
	if err := json.Unmarshal(out, &cis); err != nil || len(cis) != n {
		t.Fatalf("CMDB holds %d servers (%v), want %d", len(cis), err, n)
	}
}
