package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// The import commands against a hub in this process (so -race sees the importer, the
// gateway and the CLI): XML with a record path and an element off it, JSON under a root
// path, the error rows shown with their position, a bad map refused with its line.
func TestImportCommands(t *testing.T) {
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
	mapPath := write("hosts.yaml", `name: hosts
target: {class: linux_server}
coalesce: [serial_number]
fields:
  name: 'row.host'
  serial_number: 'row.sn'
  cpu_count: 'row.cpus'
skip_if: 'row.host == "retired"'
`)
	xmlPath := write("hosts.xml", `<inventory>
  <hosts>
    <host><host>x1</host><sn>XSN-1</sn><cpus>4</cpus></host>
    <vm><host>x2</host></vm>
    <host><host>x3</host><sn>XSN-3</sn><cpus>four</cpus></host>
    <host><host>retired</host><sn>XSN-4</sn></host>
  </hosts>
</inventory>
`)
	code, out, errs := run(t, "--server", server, "--data", cfg.DataDir, "import", "run", "--file", xmlPath, "--map", mapPath,
		"--record-path", "/inventory/hosts/host", "--wait", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r api.Run
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.State != api.StateCompleted || r.Counters != (api.Counters{Staged: 4, Inserted: 1, Ignored: 1, Error: 2}) {
		t.Fatalf("XML run: %+v", r)
	}
	code, out, errs = run(t, "--server", server, "--data", cfg.DataDir, "import", "runs", "show", r.ID, "--rows", "error")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"line 4, /inventory/hosts/vm", "element <vm> at /inventory/hosts/vm does not match the record path",
		"line 5, /inventory/hosts/host[2]", `fields.cpu_count (map line 7): want int, got string "four"`} {
		if !strings.Contains(out, want) {
			t.Errorf("runs show --rows error lacks %q:\n%s", want, out)
		}
	}

	jsonPath := write("hosts.json", `{"data":{"hosts":[{"host":"x1","sn":"XSN-1","cpus":8},{"host":"j2","sn":"JSN-2","cpus":2}]}}`)
	code, out, errs = run(t, "--server", server, "--data", cfg.DataDir, "import", "run", "--file", jsonPath, "--map", mapPath,
		"--record-path", "/data/hosts", "--wait", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Counters != (api.Counters{Staged: 2, Inserted: 1, Updated: 1}) {
		t.Fatalf("JSON run: %v %+v", err, r)
	}

	// Related CIs: software as the server's child. A row whose software the CMDB cannot
	// identify (a version without a name) has its payload refused: that row is an error
	// with the CMDB's reason, at once.
	swMap := write("sw.yaml", `name: sw
target: {class: linux_server}
coalesce: [serial_number]
fields: {name: 'row.host', serial_number: 'row.sn'}
relations:
  - {type: contains, to: {class: software, fields: {name: 'row.sw', version: 'row.ver'}}}
`)
	csvPath := write("sw.csv", "host,sn,sw,ver\nr1,RSN-1,nginx,1.2\nr2,RSN-2,,1.0\n")
	code, out, errs = run(t, "--server", server, "--data", cfg.DataDir, "import", "run", "--file", csvPath, "--map", swMap, "--wait", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Counters != (api.Counters{Staged: 2, Inserted: 1, Error: 1}) {
		t.Fatalf("software run: %v %+v", err, r)
	}
	code, out, _ = run(t, "--server", server, "--data", cfg.DataDir, "import", "runs", "show", r.ID, "--rows", "error", "-o", "json")
	if code != 0 || !strings.Contains(out, "line 3: the CMDB refused the row's payload") || !strings.Contains(out, "no identifier") {
		t.Fatalf("refused row: %s", out)
	}

	// XLSX: a value of the wrong type is an error at its cell.
	book := excelize.NewFile()
	_ = book.SetSheetName("Sheet1", "s")
	_ = book.SetSheetRow("s", "A1", &[]any{"host", "sn", "cpus"})
	_ = book.SetSheetRow("s", "A2", &[]any{"k1", "KSN-1", 2})
	_ = book.SetSheetRow("s", "A3", &[]any{"k2", "KSN-2", "many"})
	xlsxPath := filepath.Join(dir, "k.xlsx")
	if err := book.SaveAs(xlsxPath); err != nil {
		t.Fatal(err)
	}
	code, out, errs = run(t, "--server", server, "--data", cfg.DataDir, "import", "run", "--file", xlsxPath, "--map", mapPath, "--wait", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Counters != (api.Counters{Staged: 2, Inserted: 1, Error: 1}) {
		t.Fatalf("XLSX run: %v %+v", err, r)
	}
	code, out, _ = run(t, "--server", server, "--data", cfg.DataDir, "import", "runs", "show", r.ID, "--rows", "error")
	if code != 0 || !strings.Contains(out, `s!C3: fields.cpu_count (map line 7): want int, got string "many"`) {
		t.Fatalf("XLSX error row: %s", out)
	}

	code, out, _ = run(t, "--server", server, "--data", cfg.DataDir, "import", "runs", "ls")
	if code != 0 || strings.Count(out, "completed") != 4 {
		t.Fatalf("runs ls: %d %s", code, out)
	}

	bad := write("bad.yaml", "name: bad\ntarget: {class: linux_server}\ncoalesce: [name]\nfields:\n  name: 'row.host'\n  cpus: 'row.cpus'\n")
	code, _, errs = run(t, "--server", server, "--data", cfg.DataDir, "import", "maps", "check", bad)
	if code != 1 || !strings.Contains(errs, "bad.yaml:3: coalesce: the CMDB identifies linux_server by [serial_number] or [name, ip_address]") ||
		!strings.Contains(errs, `bad.yaml:6: fields.cpus: class linux_server has no attribute "cpus"`) {
		t.Fatalf("maps check of a bad map: exit %d: %s", code, errs)
	}
	code, _, errs = run(t, "--server", server, "--data", cfg.DataDir, "import", "run", "--file", xmlPath)
	if code != 2 || !strings.Contains(errs, "--file and --map are required") {
		t.Fatalf("import run without --map: exit %d: %s", code, errs)
	}
}

// Stored maps (versions), the dry run on a file's first rows, schedules: through the CLI,
// the gateway and the importer of a hub in this process.
func TestImportMapsAndSchedules(t *testing.T) {
	cfg := startHub(t)
	dir := t.TempDir()
	server := "http://" + cfg.HTTPAddr
	cli := func(args ...string) (int, string, string) {
		return run(t, append([]string{"--server", server, "--data", cfg.DataDir}, args...)...)
	}
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const v1 = "name: racks\ntarget: {class: linux_server}\ncoalesce: [serial_number]\nfields:\n  name: 'row.host'\n  serial_number: 'row.sn'\n"
	mapPath := write("racks.yaml", v1)
	for i, want := range []string{"map racks v1 stored", "map racks v1 unchanged"} {
		if code, out, errs := cli("import", "maps", "add", mapPath); code != 0 || !strings.Contains(out, want) {
			t.Fatalf("maps add #%d: exit %d: %s%s", i+1, code, out, errs)
		}
	}
	write("racks.yaml", v1+"  cpu_count: 'int(row.cpus)'\n")
	if code, out, errs := cli("import", "maps", "add", mapPath); code != 0 || !strings.Contains(out, "map racks v2 stored") {
		t.Fatalf("maps add v2: exit %d: %s%s", code, out, errs)
	}
	if code, out, _ := cli("import", "maps", "ls"); code != 0 || !strings.Contains(out, "racks") || !strings.Contains(out, "v2") {
		t.Fatalf("maps ls: %s", out)
	}
	if code, out, _ := cli("import", "maps", "show", "racks", "--version", "1"); code != 0 || strings.Contains(out, "cpu_count") || !strings.Contains(out, "racks v1") {
		t.Fatalf("maps show --version 1: %s", out)
	}
	if code, _, errs := cli("import", "maps", "show", "racks", "--version", "7"); code == 0 || !strings.Contains(errs, "map racks has no version 7 (kept: 1, 2)") {
		t.Fatalf("maps show of a missing version: exit %d: %s", code, errs)
	}

	// Dry run by stored name on the first 3 rows: nothing written to the CMDB.
	csvPath := write("racks.csv", "host,sn,cpus\nr1,RK1,4\nr2,RK2,lots\nr3,,2\nr4,RK4,8\n")
	code, out, errs := cli("import", "maps", "test", "racks", "--file", csvPath, "--rows", "3", "-o", "json")
	if code != 0 {
		t.Fatalf("maps test: exit %d: %s", code, errs)
	}
	var tr api.MapTestResponse
	if err := json.Unmarshal([]byte(out), &tr); err != nil {
		t.Fatal(err)
	}
	outcomes := func(rows []api.MapTestRow) string {
		var o []string
		for _, r := range rows {
			o = append(o, r.Outcome)
		}
		return strings.Join(o, ",")
	}
	if got := outcomes(tr.Rows); got != "inserted,error,skipped" || !tr.More || tr.Rows[0].Target["cpu_count"] != float64(4) ||
		!strings.Contains(tr.Rows[1].Reason, "line 3: fields.cpu_count") {
		t.Fatalf("dry run: %s more=%v %+v", got, tr.More, tr.Rows)
	}
	if code, out, errs := cli("import", "run", "--file", csvPath, "--map", mapPath, "--wait", "-o", "json"); code != 0 || !strings.Contains(out, `"inserted":2`) {
		t.Fatalf("import after the dry run (which wrote nothing): exit %d %s %s", code, out, errs)
	}
	// r2 was an error in the import (cpus "lots"): it would be inserted now.
	write("racks2.yaml", strings.Replace(v1, "'row.host'", "'upper(row.host)'", 1))
	code, out, _ = cli("import", "maps", "test", filepath.Join(dir, "racks2.yaml"), "--file", csvPath)
	if code != 0 || !strings.Contains(out, "would be inserted 1, updated 2, unchanged 0, ignored 0, skipped 1, error 0") ||
		!strings.Contains(out, "differs in name") {
		t.Fatalf("dry run of a changed map after the import: %s", out)
	}

	// Schedules: add, ls, refused when bad, rm.
	if code, out, errs := cli("import", "schedules", "add", "nightly-racks", "--cron", "0 2 * * *", "--map", "racks", "--file", csvPath); code != 0 ||
		!strings.Contains(out, "schedule nightly-racks added") || !strings.Contains(out, "T02:00:00Z") {
		t.Fatalf("schedules add: exit %d: %s%s", code, out, errs)
	}
	code, _, errs = cli("import", "schedules", "add", "bad", "--cron", "61 * * * *", "--map", "nomap", "--file", csvPath)
	if code == 0 || !strings.Contains(errs, `cron "61 * * * *"`) || !strings.Contains(errs, `no stored map "nomap"`) {
		t.Fatalf("bad schedule: exit %d: %s", code, errs)
	}
	if code, out, _ := cli("import", "schedules", "ls"); code != 0 || !strings.Contains(out, "nightly-racks") || strings.Contains(out, "bad") {
		t.Fatalf("schedules ls: %s", out)
	}
	if code, out, errs := cli("import", "schedules", "rm", "nightly-racks"); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("schedules rm: %d %s %s", code, out, errs)
	}
	if code, _, errs := cli("import", "schedules", "rm", "nightly-racks"); code == 0 || !strings.Contains(errs, "no import schedule") {
		t.Fatalf("schedules rm again: %d %s", code, errs)
	}
}
