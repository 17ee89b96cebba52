package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/pgserver"
)

// sccmDB starts a PostgreSQL loaded with tables shaped like SCCM's views, hosts computers
// each with two adapters, two disks and three programs; rows extra rows of v_R_System
// beyond the computers with details make a large table for the kill tests.
func sccmDB(t *testing.T, hosts, extra int) *pgserver.Server {
	t.Helper()
	if os.Getenv("OUTPOST_SKIP_PG") == "1" {
		t.Skip("OUTPOST_SKIP_PG=1")
	}
	pg, err := pgserver.Start(context.Background(), pgserver.Options{Password: "sccm-pg-5519"})
	if err != nil {
		t.Fatalf("PostgreSQL (set OUTPOST_SKIP_PG=1 to skip): %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	db, err := sql.Open("pgx", pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE "v_R_System" ("ResourceID" int PRIMARY KEY, "Name0" text, "Netbios_Name0" text, "Resource_Domain_OR_Workgr0" text, "Obsolete0" int, "Client0" int)`)
	exec(`CREATE TABLE "v_GS_PC_BIOS" ("ResourceID" int, "SerialNumber0" text, "Manufacturer0" text, "SMBIOSBIOSVersion0" text)`)
	exec(`CREATE TABLE "v_GS_OPERATING_SYSTEM" ("ResourceID" int, "Caption0" text, "Version0" text, "TotalVisibleMemorySize0" bigint)`)
	exec(`CREATE TABLE "v_GS_NETWORK_ADAPTER_CONFIGURATION" ("ResourceID" int, "Index0" int, "MACAddress0" text, "IPAddress0" text, "DHCPEnabled0" int, "Description0" text)`)
	exec(`CREATE TABLE "v_GS_LOGICAL_DISK" ("ResourceID" int, "DeviceID0" text, "FileSystem0" text, "Size0" bigint, "FreeSpace0" bigint)`)
	exec(`CREATE TABLE "v_Add_Remove_Programs" ("ResourceID" int, "DisplayName0" text, "Version0" text, "Publisher0" text)`)
	programs := [][3]string{{"Microsoft Edge", "120.0.2210.91", "Microsoft"}, {"7-Zip 23.01 (x64)", "23.01", "Igor Pavlov"},
		{"Notepad++ (64-bit x64)", "8.6.2", "Notepad++ Team"}, {"Google Chrome", "121.0.6167.85", "Google LLC"}}
	for i := 1; i <= hosts+extra; i++ {
		id := 16777216 + i
		exec(`INSERT INTO "v_R_System" VALUES ($1, $2, $2, 'CORP', 0, 1)`, id, fmt.Sprintf("WS%05d", i))
		exec(`INSERT INTO "v_GS_PC_BIOS" VALUES ($1, $2, 'Dell Inc.', '2.18.0')`, id, fmt.Sprintf("SCCM%07d", i))
		exec(`INSERT INTO "v_GS_OPERATING_SYSTEM" VALUES ($1, 'Microsoft Windows Server 2022 Standard', '10.0.20348', $2)`, id, 8388608*(1+i%4))
		if i > hosts {
			continue
		}
		for a := 0; a < 2; a++ {
			exec(`INSERT INTO "v_GS_NETWORK_ADAPTER_CONFIGURATION" VALUES ($1, $2, $3, $4, 0, 'Intel(R) Ethernet')`, id, a+1,
				fmt.Sprintf("00:50:56:%02X:%02X:%02X", a, i/256, i%256), fmt.Sprintf("10.%d.%d.%d", a, i/256, i%256))
		}
		for d, dev := range []string{"C:", "D:"} {
			exec(`INSERT INTO "v_GS_LOGICAL_DISK" VALUES ($1, $2, 'NTFS', $3, $4)`, id, dev, 102400*(d+1), 51200)
		}
		for p := 0; p < 3; p++ {
			pr := programs[(i+p)%len(programs)]
			exec(`INSERT INTO "v_Add_Remove_Programs" VALUES ($1, $2, $3, $4)`, id, pr[0], pr[1], pr[2])
		}
	}
	// a program listed twice for one machine (SCCM has 32- and 64-bit entries)
	exec(`INSERT INTO "v_Add_Remove_Programs" SELECT "ResourceID", "DisplayName0", "Version0", "Publisher0" FROM "v_Add_Remove_Programs" WHERE "ResourceID" = 16777217 LIMIT 1`)
	return pg
}

// sccmSources stores the four SCCM sources and writes their maps; it returns map paths by
// source name.
func sccmSources(t *testing.T, h *testHub, site string, pg *pgserver.Server, pageSize int) map[string]string {
	t.Helper()
	h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": "sccm-db", "type": "sql", "site": site, "username": pg.User, "secret": pg.Password,
		"allow_insecure": true, "fields": map[string]string{"tls": "none", "database": "postgres"}}, nil)
	dir := t.TempDir()
	base := []string{"--site", site, "--type", "sql", "--credential", "sccm-db", "--param", "target=" + pg.Host,
		"--param", fmt.Sprint("port=", pg.Port), "--param", fmt.Sprint("page_size=", pageSize)}
	sources := map[string]struct{ query, paging, mapText string }{
		"sccm-computers": {`SELECT s."ResourceID", s."Name0", b."SerialNumber0", b."Manufacturer0", b."SMBIOSBIOSVersion0", o."Caption0", o."Version0", o."TotalVisibleMemorySize0", s."Resource_Domain_OR_Workgr0" FROM "v_R_System" s JOIN "v_GS_PC_BIOS" b ON b."ResourceID" = s."ResourceID" JOIN "v_GS_OPERATING_SYSTEM" o ON o."ResourceID" = s."ResourceID" WHERE s."Obsolete0" = 0`,
			`key="ResourceID"`, `name: sccm-computers
source: sccm
target: {class: windows_server}
coalesce: [serial_number]
fields:
  name: 'lower(row.Name0)'
  serial_number: 'row.SerialNumber0'
  manufacturer: 'row.Manufacturer0'
  bios_version: 'row.SMBIOSBIOSVersion0'
  os: 'row.Caption0'
  os_version: 'row.Version0'
  ram_mb: 'row.TotalVisibleMemorySize0 / 1024'
  windows_domain: 'row.Resource_Domain_OR_Workgr0'
`},
		// One row per computer with its adapters side by side: the IRE takes a payload's
		// adapter MACs as the device's whole set (a serial seen with other MACs is a
		// shared placeholder), so a row per adapter would mark every serial shared.
		"sccm-adapters": {`SELECT s."ResourceID", s."Name0", b."SerialNumber0", MAX(CASE WHEN a."Index0" = 1 THEN a."MACAddress0" END) AS "MAC1", MAX(CASE WHEN a."Index0" = 2 THEN a."MACAddress0" END) AS "MAC2", MAX(a."DHCPEnabled0") AS "DHCPEnabled0" FROM "v_GS_NETWORK_ADAPTER_CONFIGURATION" a JOIN "v_R_System" s ON s."ResourceID" = a."ResourceID" JOIN "v_GS_PC_BIOS" b ON b."ResourceID" = a."ResourceID" GROUP BY s."ResourceID", s."Name0", b."SerialNumber0"`,
			`key="ResourceID"`, `name: sccm-adapters
source: sccm
target: {class: windows_server}
coalesce: [serial_number]
fields:
  serial_number: 'row.SerialNumber0'
relations:
  - {type: contains, to: {class: network_adapter, fields: {mac_address: 'row.MAC1', name: 'row.Name0 + "-1"', dhcp_enabled: 'row.DHCPEnabled0 == 1'}}}
  - {type: contains, to: {class: network_adapter, fields: {mac_address: 'row.MAC2', name: 'row.Name0 + "-2"', dhcp_enabled: 'row.DHCPEnabled0 == 1'}}}
`},
		"sccm-disks": {`SELECT d."ResourceID", d."DeviceID0", d."FileSystem0", d."Size0", d."FreeSpace0", b."SerialNumber0" FROM "v_GS_LOGICAL_DISK" d JOIN "v_GS_PC_BIOS" b ON b."ResourceID" = d."ResourceID"`,
			`order="ResourceID", "DeviceID0"`, `name: sccm-disks
source: sccm
target: {class: windows_server}
coalesce: [serial_number]
fields:
  serial_number: 'row.SerialNumber0'
relations:
  - {type: contains, to: {class: logical_disk, fields: {name: 'row.DeviceID0', file_system: 'row.FileSystem0', size_mb: 'row.Size0', free_mb: 'row.FreeSpace0'}}}
`},
		"sccm-software": {`SELECT p."ResourceID", p."DisplayName0", p."Version0", p."Publisher0", b."SerialNumber0" FROM "v_Add_Remove_Programs" p JOIN "v_GS_PC_BIOS" b ON b."ResourceID" = p."ResourceID"`,
			`order="ResourceID", "DisplayName0", "Version0"`, `name: sccm-software
source: sccm
target: {class: windows_server}
coalesce: [serial_number]
fields:
  serial_number: 'row.SerialNumber0'
relations:
  - {type: contains, to: {class: software, fields: {name: 'row.DisplayName0', version: 'row.Version0', vendor: 'row.Publisher0'}}}
`},
	}
	maps := map[string]string{}
	for name, s := range sources {
		args := append([]string{"import", "source", "add", name}, base...)
		args = append(args, "--param", "query="+s.query, "--param", s.paging)
		if out, err := h.outpost(t, args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		maps[name] = filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(maps[name], []byte(s.mapText), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return maps
}

func (h *testHub) sourceRun(t testing.TB, name, mapPath string) api.Run {
	t.Helper()
	return h.importRun(t, name, "--map", mapPath)
}

// An SCCM-shaped database read through a site's bridge: computers with their adapters,
// disks and programs in the CMDB, related; the same runs again insert nothing.
func TestImportSCCMThroughABridge(t *testing.T) {
	t.Parallel()
	const hosts = 120
	pg := sccmDB(t, hosts, 0)
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "sccm", "127.0.0.1/32", true)
	startBridge(t, h, "sccm", "sccm-br1", tok)
	h.waitStatus(t, "sccm-br1", "up")
	maps := sccmSources(t, h, "sccm", pg, 50)

	order := []string{"sccm-computers", "sccm-adapters", "sccm-disks", "sccm-software"}
	staged := map[string]int64{"sccm-computers": hosts, "sccm-adapters": hosts, "sccm-disks": 2 * hosts, "sccm-software": 3*hosts + 1}
	for _, name := range order {
		r := h.sourceRun(t, name, maps[name])
		if r.State != api.StateCompleted || r.Counters.Staged != staged[name] || r.Counters.Error != 0 || r.Counters.Skipped != 0 || r.DataSource != name {
			out, _ := h.outpost(t, "import", "runs", "show", r.ID, "--rows", "error", "--limit", "2")
			t.Fatalf("%s: %s %s %+v, want completed with %d rows and no error\n%s", name, r.State, r.Reason, r.Counters, staged[name], out)
		}
		if name == "sccm-computers" && r.Counters.Inserted != hosts {
			t.Fatalf("computers: %+v, want %d inserted", r.Counters, hosts)
		}
	}
	for class, want := range map[string]int{"windows_server": hosts, "network_adapter": 2 * hosts, "logical_disk": 2 * hosts, "software": 3 * hosts} {
		if got := ciCountCLI(t, h, class); got != want {
			t.Errorf("%s CIs: %d, want %d", class, got, want)
		}
	}
	// one computer with its relations
	out, err := h.outpost(t, "ci", "ls", "--class", "windows_server", "--search", "ws00007", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var cis []struct {
		ID         string         `json:"id"`
		Attributes map[string]any `json:"attributes"`
	}
	if err := json.Unmarshal(out, &cis); err != nil || len(cis) != 1 {
		t.Fatalf("ws00007: %v %s", err, out)
	}
	if a := cis[0].Attributes; a["serial_number"] != "SCCM0000007" || a["os"] != "Microsoft Windows Server 2022 Standard" || fmt.Sprint(a["ram_mb"]) != "32768" {
		t.Errorf("ws00007: %v", a)
	}
	out, err = h.outpost(t, "ci", "rel", cis[0].ID, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"network_adapter", "logical_disk", "software", "contains"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ws00007's relations lack %s: %s", want, out)
		}
	}

	// again: nothing new
	for _, name := range order {
		r := h.sourceRun(t, name, maps[name])
		if r.State != api.StateCompleted || r.Counters.Inserted != 0 || r.Counters.Staged != staged[name] || r.Counters.Error != 0 {
			t.Errorf("%s again: %s %s %+v, want 0 inserted", name, r.State, r.Reason, r.Counters)
		}
	}
	// the rows say where they came from: the page's cursor and their key
	out, err = h.outpost(t, "import", "runs", "ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
}

func ciCountCLI(t *testing.T, h *testHub, class string) int {
	t.Helper()
	out, err := h.outpost(t, "ci", "ls", "--class", class, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var cis []json.RawMessage
	if err := json.Unmarshal(out, &cis); err != nil {
		t.Fatalf("ci ls %s: %v", class, err)
	}
	return len(cis)
}

// waitRun polls a run until it is terminal.
func (h *testHub) waitRun(t *testing.T, id string, d time.Duration) api.Run {
	t.Helper()
	var r api.Run
	eventually(t, d, func() error {
		code, b := h.api(t, "GET", "/api/v1/imports/runs/"+id, nil)
		if code != 200 {
			return fmt.Errorf("run %s: %d %s", id, code, b)
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		if !api.Terminal(r.State) {
			return fmt.Errorf("run %s %s: %+v", id, r.State, r.Counters)
		}
		return nil
	})
	return r
}

func (h *testHub) runNow(t *testing.T, id string) api.Run {
	t.Helper()
	var r api.Run
	h.mustAPI(t, "GET", "/api/v1/imports/runs/"+id, nil, &r)
	return r
}

// startSourceRun starts a run without waiting.
func (h *testHub) startSourceRun(t *testing.T, name, mapPath string) api.Run {
	t.Helper()
	out, err := h.outpost(t, "import", "run", name, "--map", mapPath, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var r api.Run
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return r
}

// A large SQL import survives its bridge dying (a second bridge finishes it) and the hub
// dying (it resumes after a restart): every row is staged once and inserted once.
func TestImportSourceSurvivesBridgeAndHubCrash(t *testing.T) {
	t.Parallel()
	const rows = 6000
	pg := sccmDB(t, 0, rows)
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "sccm", "127.0.0.1/32", true)
	br1 := startBridge(t, h, "sccm", "crash-br1", tok)
	h.waitStatus(t, "crash-br1", "up")
	maps := sccmSources(t, h, "sccm", pg, 100)

	// the bridge: the run starts on br1 alone; br2 joins; br1 is killed mid-import
	r := h.startSourceRun(t, "sccm-computers", maps["sccm-computers"])
	eventually(t, time.Minute, func() error {
		if c := h.runNow(t, r.ID).Counters; c.Staged < 1000 {
			return fmt.Errorf("staged %d", c.Staged)
		}
		return nil
	})
	startBridge(t, h, "sccm", "crash-br2", tok)
	h.waitStatus(t, "crash-br2", "up")
	br1.proc.kill(t)
	if c := h.runNow(t, r.ID).Counters; c.Staged >= rows {
		t.Logf("note: all %d rows were staged before br1 died", c.Staged)
	}
	got := h.waitRun(t, r.ID, 3*time.Minute)
	if got.State != api.StateCompleted || got.Counters != (api.Counters{Staged: rows, Inserted: rows}) {
		t.Fatalf("after br1 died: %s %s %+v, want %d staged and inserted once", got.State, got.Reason, got.Counters, rows)
	}

	// the hub: killed mid-import (a second run of a changed map over the same source),
	// restarted on its data dir
	changed := strings.Replace(mustRead(t, maps["sccm-computers"]), "lower(row.Name0)", "upper(row.Name0)", 1)
	changedPath := filepath.Join(t.TempDir(), "changed.yaml")
	if err := os.WriteFile(changedPath, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	r2 := h.startSourceRun(t, "sccm-computers", changedPath)
	eventually(t, time.Minute, func() error {
		if c := h.runNow(t, r2.ID).Counters; c.Staged < 1000 {
			return fmt.Errorf("staged %d", c.Staged)
		}
		return nil
	})
	h.proc.kill(t)
	h.restart(t)
	got = h.waitRun(t, r2.ID, 3*time.Minute)
	// Every row once. A row the CMDB ingested but whose receipt it had not sent when the hub
	// died is ingested again after the restart and reported unchanged (a known limit, see
	// docs/architecture.md): updated + unchanged, never a row twice or lost.
	c := got.Counters
	if got.State != api.StateCompleted || c.Staged != rows || c.Updated+c.Unchanged != rows || c.Done() != rows {
		t.Fatalf("after the hub crash: %s %s %+v, want %d staged and each updated once", got.State, got.Reason, c, rows)
	}
	out, err := h.outpost(t, "ci", "ls", "--class", "windows_server", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var cis []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(out, &cis); err != nil || len(cis) != rows {
		t.Fatalf("windows_server CIs: %d (%v), want %d", len(cis), err, rows)
	}
	for _, ci := range cis {
		if ci.Name == "" || ci.Name != strings.ToUpper(ci.Name) {
			t.Fatalf("%s: the changed map did not reach it", ci.Name)
		}
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
