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
	if code != 0 || !strings.Contains(out, `sheet s row 3, cell C3`) || !strings.Contains(out, `sheet "s" cell C3: fields.cpu_count (map line 7): want int, got string "many"`) {
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
