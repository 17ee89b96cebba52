package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/xuri/excelize/v2"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb"
	"github.com/outpost-dev/outpost/services/importer"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

// importHub is the importer and a real CMDB (SQLite) on an embedded bus, composed as the hub
// composes them; the importer can be stopped and started again over the same bus.
type importHub struct {
	t       *testing.T
	ctx     context.Context
	nc      *nats.Conn
	js      jetstream.JetStream
	cfg     importer.Config
	clock   clock.Clock // the importer's; nil: the real one
	stopImp func()
}

func newImportHub(t *testing.T) *importHub { return newImportHubWith(t, nil) }

func newImportHubWith(t *testing.T, clk clock.Clock) *importHub {
	t.Helper()
	dir := t.TempDir()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "imp-ops", StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("imp-ops")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	if err := bus.Provision(ctx, js, hub.Topology(bus.DefaultLimits())); err != nil {
		t.Fatal(err)
	}
	cmdbDone := make(chan error, 1)
	cc := cmdb.DefaultConfig()
	cc.DSN = "sqlite://" + filepath.Join(dir, "cmdb.db")
	// The tests' CIs are observed on fixed days; the CMDB's staleness sweep runs on the wall
	// clock and would mark them stale (an update) as those days recede.
	cc.StaleAfter = 100 * 365 * 24 * time.Hour
	go func() {
		cmdbDone <- cmdb.Run(ctx, cc, cmdb.Deps{NC: nc, JS: js, Logger: slog.New(slog.DiscardHandler)})
	}()
	h := &importHub{t: t, ctx: ctx, nc: nc, js: js, cfg: importer.DefaultConfig(), clock: clk}
	h.cfg.TempDir = t.TempDir()
	h.cfg.ReceiptWait = 20 * time.Second
	h.startImporter()
	t.Cleanup(func() {
		h.stopImp()
		cancel()
		<-cmdbDone
		nc.Close()
		srv.Shutdown()
	})
	return h
}

func (h *importHub) startImporter() {
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() { done <- importer.Run(ctx, h.cfg, importer.Deps{NC: h.nc, JS: h.js, Clock: h.clock}) }()
	// Once: a test that stops the importer and fails before starting it again stops it
	// again in its cleanup, which must not wait for a second end that never comes.
	h.stopImp = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("importer: %v", err)
		}
	})
}

// upload stores data in the upload bucket under a fresh name.
func (h *importHub) upload(name string, data []byte) string {
	h.t.Helper()
	key := fmt.Sprintf("%s-%d", strings.ReplaceAll(name, ".", "-"), time.Now().UnixNano())
	eventually(h.t, 20*time.Second, func() error {
		objs, err := h.js.ObjectStore(h.ctx, api.UploadBucket)
		if err != nil {
			return err
		}
		_, err = objs.Put(h.ctx, jetstream.ObjectMeta{Name: key}, bytes.NewReader(data))
		return err
	})
	return key
}

// run imports data with a map and waits for the run to end.
func (h *importHub) run(name string, data []byte, opts api.FileOptions, mapYAML string) api.Run {
	h.t.Helper()
	key := h.upload(name, data)
	var run api.Run
	eventually(h.t, 20*time.Second, func() error {
		var err error
		run, err = api.Start.Call(h.ctx, h.nc, api.StartRequest{Upload: key, Filename: name, Options: opts, Map: mapYAML, MapFile: "m.yaml"})
		return err
	})
	return h.wait(run.ID)
}

func (h *importHub) wait(id string) api.Run {
	h.t.Helper()
	var r api.Run
	eventually(h.t, 60*time.Second, func() error {
		var err error
		if r, err = api.RunGet.Call(h.ctx, h.nc, api.RunRequest{ID: id}); err != nil {
			return err
		}
		if !api.Terminal(r.State) {
			return fmt.Errorf("run %s %s %+v", id, r.State, r.Counters)
		}
		return nil
	})
	return r
}

func (h *importHub) rows(id, outcome string) []api.RowResult {
	h.t.Helper()
	resp, err := api.Rows.Call(h.ctx, h.nc, api.RowsRequest{Run: id, Outcome: outcome, Limit: 1000})
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.Rows
}

func xlsxBytes(t *testing.T, sheet string, rows [][]any, merge [2]string) []byte {
	t.Helper()
	f := excelize.NewFile()
	_ = f.SetSheetName("Sheet1", sheet)
	for i, r := range rows {
		if err := f.SetSheetRow(sheet, fmt.Sprintf("A%d", i+1), &r); err != nil {
			t.Fatal(err)
		}
	}
	if merge[0] != "" {
		if err := f.MergeCell(sheet, merge[0], merge[1]); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if err := f.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

const badInputMap = `name: bad-input
target: {class: linux_server}
coalesce: [serial_number]
fields:
  name: 'lower(row.host)'
  serial_number: 'row.serial'
  ram_mb: 'row.ram_gb != nil ? int(row.ram_gb) * 1024 : nil'
  virtual: 'row.virt'
  os: 'row.os != nil ? upper(row.os) : nil'
`

// Bad input: each bad row is an error at its line, cell or record with its reason, and
// the run goes on with the others — through the real importer and CMDB.
func TestImportBadInputRowByRow(t *testing.T) {
	t.Parallel()
	h := newImportHub(t)
	for _, tc := range []struct {
		name   string
		file   string
		data   []byte
		opts   api.FileOptions
		want   api.Counters
		errors []string // each error row's position and reason, in order: "WHERE | REASON SUBSTRING"
	}{{
		name: "malformed CSV line", file: "servers.csv",
		data: []byte("host,serial,ram_gb,virt\nok-1,CSV1,4,no\nbroken,\"CSV2,4,no\nok-3,CSV3,8,yes\n"),
		// An unclosed quote swallows the rest of the file into one field: the bad line is
		// the last one read, the rows before it are imported.
		want:   api.Counters{Staged: 2, Inserted: 1, Error: 1},
		errors: []string{`line 3 | line 3: malformed CSV: a quoted field opened on line 3 is not closed`},
	}, {
		name: "CSV row with the wrong number of fields", file: "servers.csv",
		data:   []byte("host,serial,ram_gb,virt\nok-4,CSV4,4,no\nshort,CSV5\nok-6,CSV6,8,yes\n"),
		want:   api.Counters{Staged: 3, Inserted: 2, Error: 1},
		errors: []string{"line 3 | line 3: 2 fields, the header has 4"},
	}, {
		name: "XLSX merged header cells", file: "servers.xlsx",
		data: xlsxBytes(t, "servers", [][]any{{"host", "serial", "ram_gb", nil, "virt"}, {"x-1", "XL1", 4, nil, "no"}, {"x-2", "XL2", 8, 2, "no"}, {"x-3", "XL3", 16, nil, "yes"}},
			[2]string{"C1", "D1"}),
		want:   api.Counters{Staged: 3, Inserted: 2, Error: 1},
		errors: []string{`servers!D3 | servers!D3: "2" has no column: the header cell D1 of sheet "servers" (merged into C1:D1) is blank`},
	}, {
		name: "XLSX wrong type in a mapped field", file: "servers.xlsx",
		data:   xlsxBytes(t, "servers", [][]any{{"host", "serial", "ram_gb", "virt"}, {"x-4", "XL4", 4, "no"}, {"x-5", "XL5", 4, "perhaps"}}, [2]string{}),
		want:   api.Counters{Staged: 2, Inserted: 1, Error: 1},
		errors: []string{`servers!D3 | servers!D3: fields.virtual (map line 8): want bool, got string "perhaps"`},
	}, {
		name: "XML not matching the record path", file: "servers.xml",
		data: []byte("<servers>\n<server><host>m-1</host><serial>XM1</serial><ram_gb>2</ram_gb></server>\n<switch><host>sw</host></switch>\n" +
			"<server><host>m-3</host><serial>XM3</serial><ram_gb>2</ram_gb></server>\n</servers>\n"),
		opts:   api.FileOptions{RecordPath: "/servers/server"},
		want:   api.Counters{Staged: 3, Inserted: 2, Error: 1},
		errors: []string{"line 3, /servers/switch | element <switch> at /servers/switch does not match the record path /servers/server"},
	}, {
		name: "JSON expression failing at run time", file: "servers.json",
		data:   []byte(`{"data":[{"host":"j-1","serial":"JS1","ram_gb":"abc"},{"host":"j-2","serial":"JS2","ram_gb":4},{"host":"j-3","serial":"JS3","os":7}]}`),
		opts:   api.FileOptions{RecordPath: "/data"},
		want:   api.Counters{Staged: 3, Inserted: 1, Error: 2},
		errors: []string{"$.data[0] | $.data[0]: fields.ram_mb (map line 7): ", "$.data[2] | $.data[2]: fields.os (map line 9): "},
	}, {
		name: "JSON Lines not an object", file: "servers.jsonl",
		data:   []byte("{\"host\":\"l-1\",\"serial\":\"JL1\"}\n[1,2]\n{\"host\":\"l-3\",\"serial\":\"JL3\"}\n"),
		want:   api.Counters{Staged: 3, Inserted: 2, Error: 1},
		errors: []string{"line 2 | line 2: want an object, found an array"},
	}, {
		name: "expression over a missing column", file: "servers.jsonl",
		data:   []byte("{\"host\":\"l-4\",\"serial\":\"JL4\",\"os\":\"x\"}\n{\"serial\":\"JL5\",\"os\":\"y\"}\n"),
		want:   api.Counters{Staged: 2, Inserted: 1, Error: 1},
		errors: []string{"line 2 | the row has no value for host"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			run := h.run(tc.file, tc.data, tc.opts, badInputMap)
			if run.State != api.StateCompleted || run.Counters != tc.want {
				t.Fatalf("run %s %s %+v, want completed %+v; errors: %+v", run.State, run.Reason, run.Counters, tc.want, h.rows(run.ID, api.OutcomeError))
			}
			bad := h.rows(run.ID, api.OutcomeError)
			if len(bad) != len(tc.errors) {
				t.Fatalf("%d error rows, want %d: %+v", len(bad), len(tc.errors), bad)
			}
			for i, w := range tc.errors {
				pos, reason, _ := strings.Cut(w, " | ")
				if got := bad[i].Position.String(); got != pos || !strings.Contains(bad[i].Reason, reason) {
					t.Errorf("error row %d at %q: %q\nwant at %q: %q", i, got, bad[i].Reason, pos, reason)
				}
			}
		})
	}
}

// A row whose payload the CMDB ingested before a restart, but whose receipt the importer
// never got, is sent again after it and reported unchanged by the CMDB: the row is still
// counted inserted, from the CI's own history (made by this run's payload), once per CI.
// The state a crash leaves — a run record in KV, its staged rows, the CMDB already holding
// some rows' CIs — is written here as the importer writes it, then the importer starts.
func TestResumedRowCountsItsOwnInsert(t *testing.T) {
	t.Parallel()
	h := newImportHub(t)
	// Before the run: one server the CMDB knows already (an earlier import).
	earlier := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	observed := time.Date(2026, 11, 2, 3, 4, 5, 678000000, time.UTC)
	ingest := func(serial string, at time.Time) {
		t.Helper()
		p := envelope.CIPayload{Source: "import", Observed: at, Items: []envelope.CIItem{{Ref: "row", Class: "linux_server",
			Attributes: map[string]any{"name": "r-" + strings.ToLower(serial), "serial_number": serial}}}}
		eventually(t, 20*time.Second, func() error {
			_, err := cmdbapi.Ingest.Call(h.ctx, h.nc, cmdbapi.IngestRequest{Payload: p})
			return err
		})
	}
	ingest("RS0", earlier)

	h.stopImp()
	const run = "01KRESUMEDRUN000000000000A"
	serials := []string{"RS0", "RS1", "RS2", "RS3", "RS4", "RS3"} // row 6 is row 4's server again
	for i, sn := range serials {
		b, _ := json.Marshal(map[string]any{"n": i + 1, "pos": map[string]any{"line": i + 2}, "cols": map[string]any{"h": "r-" + strings.ToLower(sn), "s": sn}})
		msg := &nats.Msg{Subject: "import." + run + ".rows", Data: b, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.r.%d", run, i+1))
		if _, err := h.js.PublishMsg(h.ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	// Rows 2 and 4 (and so 6, the same server) reached the CMDB before the "crash".
	ingest("RS1", observed)
	ingest("RS3", observed)
	const mapYAML = "name: m\ntarget: {class: linux_server}\ncoalesce: [serial_number]\nfields: {name: 'row.h', serial_number: 'row.s'}\n"
	rec, _ := json.Marshal(map[string]any{"id": run, "set": run, "state": api.StateRunning, "filename": "s.csv", "options": map[string]any{},
		"map_name": "m", "class": "linux_server", "source": "import", "created": observed, "staging_done": true,
		"counters": map[string]any{"staged": len(serials)}, "map": mapYAML, "observed": observed, "sent_mark": 1024})
	kv, err := h.js.KeyValue(h.ctx, importer.KVRuns)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(h.ctx, run, rec); err != nil {
		t.Fatal(err)
	}
	h.startImporter()
	final := h.wait(run)
	// RS0 was there before the run: unchanged. RS1 and RS3 are the run's own inserts, lost
	// receipts or not; row 6 is RS3 again: unchanged.
	if want := (api.Counters{Staged: 6, Inserted: 4, Unchanged: 2}); final.State != api.StateCompleted || final.Counters != want {
		t.Fatalf("resumed run %s %s %+v, want %+v; rows %+v", final.State, final.Reason, final.Counters, want, h.rows(run, ""))
	}
	got := map[int64]string{}
	for _, r := range h.rows(run, "") {
		got[r.N] = r.Outcome
	}
	want := map[int64]string{1: api.OutcomeUnchanged, 2: api.OutcomeInserted, 3: api.OutcomeInserted, 4: api.OutcomeInserted, 5: api.OutcomeInserted, 6: api.OutcomeUnchanged}
	if got[6] == api.OutcomeInserted {
		// Rows 4 and 6 are one server, their payloads in flight together: the one whose
		// receipt is read first is the insert.
		want[4], want[6] = api.OutcomeUnchanged, api.OutcomeInserted
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("row outcomes %v, want %v", got, want)
	}
}

// A schedule imports its kept file with its stored map at each slot: the first slot
// inserts, the next finds everything unchanged, and removing the schedule stops it. The
// importer's clock is fake, so slots come when the test says.
func TestScheduledImportRunsEachSlot(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2026, 3, 1, 0, 0, 30, 0, time.UTC))
	h := newImportHubWith(t, clk)
	const mapYAML = "name: sched\ntarget: {class: linux_server}\ncoalesce: [serial_number]\nfields: {name: 'row.h', serial_number: 'row.s'}\n"
	var sm api.StoredMap
	eventually(t, 20*time.Second, func() error {
		var err error
		sm, err = api.MapAdd.Call(h.ctx, h.nc, api.MapSource{Map: mapYAML, MapFile: "sched.yaml"})
		return err
	})
	files, err := h.js.ObjectStore(h.ctx, api.ScheduleFiles)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := files.PutString(h.ctx, "sched-file", "h,s\nsch-1,SCH1\nsch-2,SCH2\n"); err != nil {
		t.Fatal(err)
	}
	sc, err := api.ScheduleAdd.Call(h.ctx, h.nc, api.Schedule{Name: "every-5", Cron: "*/5 * * * *", MapName: sm.Name, Upload: "sched-file", File: "s.csv"})
	if err != nil {
		t.Fatal(err)
	}
	if sc.Next == nil || !sc.Next.Equal(time.Date(2026, 3, 1, 0, 5, 0, 0, time.UTC)) {
		t.Fatalf("next slot %v, want 00:05", sc.Next)
	}
	scheduled := func() []api.Run {
		resp, err := api.RunList.Call(h.ctx, h.nc, api.RunsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var out []api.Run
		for _, r := range resp.Runs {
			if r.Schedule == "every-5" {
				out = append(out, r)
			}
		}
		return out
	}
	slot := func(n int, want api.Counters) {
		t.Helper()
		clk.Advance(5 * time.Minute)
		var runs []api.Run
		eventually(t, 30*time.Second, func() error {
			clk.Advance(100 * time.Millisecond) // the scheduler and the run wait on the clock too
			if runs = scheduled(); len(runs) != n || !api.Terminal(runs[0].State) {
				return fmt.Errorf("%d scheduled runs (%+v), want %d, the newest finished", len(runs), runs, n)
			}
			return nil
		})
		if r := runs[0]; r.State != api.StateCompleted || r.Counters != want || r.MapName != "sched" {
			t.Fatalf("slot %d: run %s %s %+v, want %+v", n, r.State, r.Reason, r.Counters, want)
		}
	}
	slot(1, api.Counters{Staged: 2, Inserted: 2})
	slot(2, api.Counters{Staged: 2, Unchanged: 2}) // the file was kept for the next slot
	if _, err := api.ScheduleRm.Call(h.ctx, h.nc, api.ScheduleRequest{Name: "every-5"}); err != nil {
		t.Fatal(err)
	}
	if _, err := files.GetInfo(h.ctx, "sched-file"); err == nil {
		t.Error("the schedule's file outlived the schedule")
	}
	if ls, err := api.ScheduleLs.Call(h.ctx, h.nc, api.RunsRequest{}); err != nil || len(ls.Schedules) != 0 {
		t.Fatalf("schedules after rm: %+v %v", ls.Schedules, err)
	}
	clk.Advance(10 * time.Minute)
	if n := len(scheduled()); n != 2 {
		t.Fatalf("%d scheduled runs after the schedule was removed, want 2", n)
	}
}

// Rows travel to the CMDB many to a payload; a payload the CMDB refuses (here for one row's
// adapter, whose placeholder MAC leaves it no identifier: only the CMDB checks related
// CIs' identifiers) is sent again row by row, so that only the row
// at fault is an error, at its line, with the CMDB's reason, and every other row of the
// payload is inserted.
func TestRefusedPayloadErrsOnlyItsRow(t *testing.T) {
	t.Parallel()
	h := newImportHub(t)
	const mapYAML = `name: nics
target: {class: linux_server}
coalesce: [serial_number]
fields:
  name: 'row.host'
  serial_number: 'row.serial'
relations:
  - {type: contains, to: {class: network_adapter, fields: {mac_address: 'row.mac'}}}
`
	var csv strings.Builder
	csv.WriteString("host,serial,mac\n")
	for i := 1; i <= 40; i++ {
		mac := fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256)
		if i == 17 {
			mac = "00:00:00:00:00:00"
		}
		fmt.Fprintf(&csv, "rf-%02d,RFSN%02d,%s\n", i, i, mac)
	}
	run := h.run("nics.csv", []byte(csv.String()), api.FileOptions{}, mapYAML)
	if want := (api.Counters{Staged: 40, Inserted: 39, Error: 1}); run.State != api.StateCompleted || run.Counters != want {
		t.Fatalf("run %s %s %+v, want completed %+v; errors: %+v", run.State, run.Reason, run.Counters, want, h.rows(run.ID, api.OutcomeError))
	}
	bad := h.rows(run.ID, api.OutcomeError)
	if len(bad) != 1 || bad[0].N != 17 || bad[0].Position.String() != "line 18" ||
		!strings.Contains(bad[0].Reason, "the CMDB refused the row's payload") || !strings.Contains(bad[0].Reason, "no identifier") {
		t.Fatalf("error rows %+v: want row 17 at line 18, refused by the CMDB: its adapter has no identifier", bad)
	}
}
