package source

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"
	"golang.org/x/text/encoding/charmap"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// readAll reads every row of a file, failing the test on a fatal error unless wantFatal.
func readAll(t *testing.T, path string, opts api.FileOptions) ([]Row, error) {
	t.Helper()
	r, err := Open(path, opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var rows []Row
	for {
		row, err := r.Next()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
}

func write(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func latin1(s string) []byte {
	b, err := charmap.Windows1252.NewEncoder().Bytes([]byte(s))
	if err != nil {
		panic(err)
	}
	return b
}

// want is a row as a test expects it: its columns (nil for an error row) or the error's text.
type want struct {
	line int64
	cols map[string]any
	err  string // a substring of the row's error
}

func check(t *testing.T, rows []Row, wants []want) {
	t.Helper()
	if len(rows) != len(wants) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(wants), rows)
	}
	for i, w := range wants {
		r := rows[i]
		if r.N != int64(i+1) {
			t.Errorf("row %d: ordinal %d", i, r.N)
		}
		if w.line != 0 && r.Pos.Line != w.line {
			t.Errorf("row %d: line %d, want %d", i, r.Pos.Line, w.line)
		}
		if w.err != "" {
			if !strings.Contains(r.Err, w.err) {
				t.Errorf("row %d: error %q, want it to say %q", i, r.Err, w.err)
			}
			continue
		}
		if r.Err != "" {
			t.Errorf("row %d: unexpected error %q", i, r.Err)
		}
		for k, v := range w.cols {
			if r.Cols[k] != v {
				t.Errorf("row %d: %s = %#v, want %#v (row %v)", i, k, r.Cols[k], v, r.Cols)
			}
		}
		if len(r.Cols) != len(w.cols) {
			t.Errorf("row %d: columns %v, want %v", i, r.Cols, w.cols)
		}
	}
}

func TestCSV(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		data  []byte
		opts  api.FileOptions
		delim rune
		enc   string
		rows  []want
		fatal string
	}{
		{name: "bom comma", data: []byte("\xEF\xBB\xBFhost,serial\r\na,S1\r\nb,S2\r\n"), delim: ',', enc: "utf-8 (BOM)",
			rows: []want{{2, map[string]any{"host": "a", "serial": "S1"}, ""}, {3, map[string]any{"host": "b", "serial": "S2"}, ""}}},
		{name: "semicolon with quoted commas", data: []byte("host;note\na;\"x, y; z\"\n"), delim: ';', enc: "utf-8",
			rows: []want{{2, map[string]any{"host": "a", "note": "x, y; z"}, ""}}},
		{name: "tab", data: []byte("host\tram\na\t8\n"), delim: '\t', enc: "utf-8",
			rows: []want{{2, map[string]any{"host": "a", "ram": "8"}, ""}}},
		{name: "pipe", data: []byte("a|b|c\n1|2|3\n"), delim: '|', enc: "utf-8",
			rows: []want{{2, map[string]any{"a": "1", "b": "2", "c": "3"}, ""}}},
		{name: "latin-1", data: latin1("name,city\nJosé,Zürich\n"), delim: ',', enc: "windows-1252",
			rows: []want{{2, map[string]any{"name": "José", "city": "Zürich"}, ""}}},
		{name: "multi-line quoted field keeps the row's first line", data: []byte("a,b\n\"x\ny\",1\nz,2\n"), delim: ',', enc: "utf-8",
			rows: []want{{2, map[string]any{"a": "x\ny", "b": "1"}, ""}, {4, map[string]any{"a": "z", "b": "2"}, ""}}},
		{name: "bad quote is a row error and the file goes on", data: []byte("a,b\n1,2\n3,x\"y\n5,6\n"), delim: ',', enc: "utf-8",
			rows: []want{{2, map[string]any{"a": "1", "b": "2"}, ""}, {3, nil, "line 3: malformed CSV at column 4: bare \" in non-quoted-field"}, {4, map[string]any{"a": "5", "b": "6"}, ""}}},
		{name: "unclosed quote names the line it opened on", data: []byte("a,b\n1,2\n3,\"x\n5,6\n"), delim: ',', enc: "utf-8",
			rows: []want{{2, map[string]any{"a": "1", "b": "2"}, ""}, {3, nil, "line 3: malformed CSV: a quoted field opened on line 3 is not closed"}}},
		{name: "short and long rows", data: []byte("a,b\n1\n1,2,3\n"), delim: ',', enc: "utf-8",
			rows: []want{{2, nil, "line 2: 1 fields, the header has 2"}, {3, nil, "line 3: 3 fields, the header has 2"}}},
		{name: "header row 3", data: []byte("report\nmade today\nhost,ip\na,10.0.0.1\n"), opts: api.FileOptions{HeaderRow: 3}, delim: ',', enc: "utf-8",
			rows: []want{{4, map[string]any{"host": "a", "ip": "10.0.0.1"}, ""}}},
		{name: "blank header", data: []byte("host,,ip\na,b,c\n"), fatal: "line 1, column 2 is blank"},
		{name: "duplicate header", data: []byte("host,host\na,b\n"), fatal: `column name "host" is used twice`},
		{name: "header row past the end", data: []byte("host\n"), opts: api.FileOptions{HeaderRow: 5}, fatal: "header row 5: the file has only 1 rows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := write(t, "f.csv", tc.data)
			if tc.fatal == "" {
				f, _ := os.Open(p)
				c, err := newCSV(f, tc.opts)
				if err != nil {
					t.Fatal(err)
				}
				if c.Delim != tc.delim || c.Encoding != tc.enc {
					t.Errorf("detected delimiter %q encoding %s, want %q %s", c.Delim, c.Encoding, tc.delim, tc.enc)
				}
				c.Close()
			}
			rows, err := readAll(t, p, tc.opts)
			if tc.fatal != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fatal) {
					t.Fatalf("error %v, want it to say %q", err, tc.fatal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			check(t, rows, tc.rows)
		})
	}
}

// xlsx writes a workbook with excelize: sheet → rows of cells from A1; merge lists ranges.
func xlsx(t *testing.T, sheets map[string][][]any, order []string, merge map[string][2]string) string {
	t.Helper()
	f := excelize.NewFile()
	for i, name := range order {
		if i == 0 {
			if err := f.SetSheetName("Sheet1", name); err != nil {
				t.Fatal(err)
			}
		} else if _, err := f.NewSheet(name); err != nil {
			t.Fatal(err)
		}
		for r, row := range sheets[name] {
			cell, _ := excelize.CoordinatesToCellName(1, r+1)
			if err := f.SetSheetRow(name, cell, &row); err != nil {
				t.Fatal(err)
			}
		}
		if m, ok := merge[name]; ok {
			if err := f.MergeCell(name, m[0], m[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := filepath.Join(t.TempDir(), "book.xlsx")
	if err := f.SaveAs(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestXLSX(t *testing.T) {
	t.Parallel()
	servers := [][]any{{"host", "ram_gb", "os"}, {"a", 8, "Debian 12"}, {}, {"b", 16.5, "Rocky"}}
	inventory := [][]any{{"Inventory export"}, {}, {"name", "serial"}, {"x", "S1"}}
	book := xlsx(t, map[string][][]any{"servers": servers, "inventory": inventory}, []string{"servers", "inventory"}, nil)
	merged := xlsx(t, map[string][][]any{"s": {{"host", "ram", nil, "os"}, {"a", 1, 2, "x"}, {"b", 4, nil, "y"}}}, []string{"s"}, map[string][2]string{"s": {"B1", "C1"}})
	blank := xlsx(t, map[string][][]any{"s": {{"host", nil, "os"}, {"a", 1, "x"}, {"b", nil, "y"}}}, []string{"s"}, nil)
	allBlank := xlsx(t, map[string][][]any{"My Sheet": {{"host", nil, "os"}, {"a", "x", "y"}}}, []string{"My Sheet"}, nil)
	twice := xlsx(t, map[string][][]any{"s": {{"host", nil, "host"}, {"a", 1, "x"}}}, []string{"s"}, nil)
	wide := xlsx(t, map[string][][]any{"s": {{"host"}, {"a", "stray"}}}, []string{"s"}, nil)
	for _, tc := range []struct {
		name  string
		path  string
		opts  api.FileOptions
		rows  []want
		pos   []api.Position
		fatal string
	}{
		{name: "first sheet, empty rows skipped", path: book,
			rows: []want{{0, map[string]any{"host": "a", "ram_gb": "8", "os": "Debian 12"}, ""}, {0, map[string]any{"host": "b", "ram_gb": "16.5", "os": "Rocky"}, ""}},
			pos:  []api.Position{{Sheet: "servers", Row: 2}, {Sheet: "servers", Row: 4}}},
		{name: "sheet and header row chosen", path: book, opts: api.FileOptions{Sheet: "inventory", HeaderRow: 3},
			rows: []want{{0, map[string]any{"name": "x", "serial": "S1"}, ""}}, pos: []api.Position{{Sheet: "inventory", Row: 4}}},
		{name: "unknown sheet", path: book, opts: api.FileOptions{Sheet: "hosts"}, fatal: `sheet "hosts" not found: the workbook has "servers", "inventory"`},
		// A blank or merged header cell names no column: a value under it is that row's
		// error at its cell, the rows with nothing there are read, the sheet goes on.
		{name: "merged header cell", path: merged, rows: []want{
			{0, nil, `s!C2: "2" has no column: the header cell C1 of sheet "s" (merged into B1:C1) is blank`},
			{0, map[string]any{"host": "b", "ram": "4", "os": "y"}, ""}},
			pos: []api.Position{{Sheet: "s", Row: 2, Cell: "C2"}, {Sheet: "s", Row: 3}}},
		{name: "blank header cell", path: blank, rows: []want{
			{0, nil, `s!B2: "1" has no column: the header cell B1 of sheet "s" is blank`},
			{0, map[string]any{"host": "b", "os": "y"}, ""}},
			pos: []api.Position{{Sheet: "s", Row: 2, Cell: "B2"}, {Sheet: "s", Row: 3}}},
		{name: "quoted sheet name", path: allBlank, rows: []want{{0, nil, `'My Sheet'!B2: "x" has no column`}}},
		{name: "header name twice", path: twice, fatal: `header cell C1 of sheet "s": column name "host" is used twice (first at cell A1 of sheet "s")`},
		{name: "value beyond the header", path: wide, rows: []want{{0, nil, `s!B2: a value beyond the last named column`}},
			pos: []api.Position{{Sheet: "s", Row: 2, Cell: "B2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rows, err := readAll(t, tc.path, tc.opts)
			if tc.fatal != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fatal) {
					t.Fatalf("error %v, want it to say %q", err, tc.fatal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			check(t, rows, tc.rows)
			for i, p := range tc.pos {
				if rows[i].Pos != p {
					t.Errorf("row %d at %+v, want %+v", i, rows[i].Pos, p)
				}
			}
		})
	}
}

func TestXML(t *testing.T) {
	t.Parallel()
	doc := `<?xml version="1.0"?>
<servers>
  <server id="1"><host>a</host><nic><mac>m1</mac></nic><tag>x</tag><tag>y</tag></server>
  <host><name>stray</name></host>
  <server id="2"><host>b</host></server>
</servers>
`
	for _, tc := range []struct {
		name  string
		doc   string
		path  string
		rows  []want
		recs  []string
		fatal string
	}{
		{name: "records, a sibling that is not one", doc: doc, path: "/servers/server",
			rows: []want{
				{3, map[string]any{"id": "1", "host": "a", "nic.mac": "m1", "tag": []any{"x", "y"}}, ""},
				{4, nil, "line 4: element <host> at /servers/host does not match the record path /servers/server"},
				{5, map[string]any{"id": "2", "host": "b"}, ""}},
			recs: []string{"/servers/server[1]", "/servers/host", "/servers/server[2]"}},
		{name: "root does not match", doc: doc, path: "/inventory/server",
			rows: []want{{2, nil, "the root element is <servers>, the record path /inventory/server wants <inventory>"}}},
		{name: "no record path: the root's children", doc: "<r><a><x>1</x></a><b><x>2</x></b></r>",
			rows: []want{{1, map[string]any{"x": "1"}, ""}, {1, map[string]any{"x": "2"}, ""}}},
		{name: "malformed XML ends the file with a row error", doc: "<servers>\n<server><host>a</host></server>\n<server><host>b</host></oops>\n</servers>", path: "/servers/server",
			rows: []want{{2, map[string]any{"host": "a"}, ""}, {3, nil, "malformed XML in record /servers/server[2]"}}},
		{name: "nothing at the record path", doc: "<servers></servers>", path: "/servers/server", fatal: "no element matches the record path /servers/server"},
		{name: "bad record path", doc: doc, path: "/servers/server[1]", fatal: "want element names separated by /"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rows, err := readAll(t, write(t, "f.xml", []byte(tc.doc)), api.FileOptions{RecordPath: tc.path})
			if tc.fatal != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fatal) {
					t.Fatalf("error %v, want it to say %q", err, tc.fatal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range rows { // lists compare by content
				if l, ok := rows[i].Cols["tag"].([]any); ok && len(l) == 2 && l[0] == "x" && l[1] == "y" {
					rows[i].Cols["tag"] = "xy"
					tc.rows[i].cols["tag"] = "xy"
				}
			}
			check(t, rows, tc.rows)
			for i, r := range tc.recs {
				if rows[i].Pos.Record != r {
					t.Errorf("row %d: record %q, want %q", i, rows[i].Pos.Record, r)
				}
			}
		})
	}
}

func TestJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		doc    string
		format string
		path   string
		rows   []want
		recs   []string
		fatal  string
	}{
		{name: "root array, types kept", doc: `[{"host":"a","ram":8,"load":0.5,"up":true},{"host":"b","ram":16}]`,
			rows: []want{{0, map[string]any{"host": "a", "ram": int64(8), "load": 0.5, "up": true}, ""}, {0, map[string]any{"host": "b", "ram": int64(16)}, ""}},
			recs: []string{"$[0]", "$[1]"}},
		{name: "root path past other keys", doc: `{"meta":{"n":[1,2,{"deep":[]}]},"data":{"servers":[{"host":"a"}]}}`, path: "/data/servers",
			rows: []want{{0, map[string]any{"host": "a"}, ""}}, recs: []string{"$.data.servers[0]"}},
		{name: "element not an object", doc: `[{"host":"a"},"b",{"host":"c"}]`,
			rows: []want{{0, map[string]any{"host": "a"}, ""}, {0, nil, "want an object, found a string"}, {0, map[string]any{"host": "c"}, ""}}},
		{name: "not an array at the root path", doc: `{"data":{"servers":{"host":"a"}}}`, path: "data.servers",
			fatal: "at $.data.servers: want an array of records, found an object"},
		{name: "root is an object", doc: `{"servers":[]}`, fatal: "at $: want an array of records, found an object (give --record-path"},
		{name: "missing key", doc: `{"data":{}}`, path: "/data/servers", fatal: `at $.data: no key "servers"`},
		{name: "syntax error mid-array", doc: `[{"host":"a"},{"host":}]`,
			rows: []want{{0, map[string]any{"host": "a"}, ""}, {0, nil, "malformed JSON, nothing after it is read"}}},
		{name: "json lines", format: api.FormatJSONL, doc: "{\"host\":\"a\"}\n\nnot json\n[1]\n{\"host\":\"d\"}\n",
			rows: []want{{1, map[string]any{"host": "a"}, ""}, {3, nil, "line 3: malformed JSON"}, {4, nil, "line 4: want an object, found an array"}, {5, map[string]any{"host": "d"}, ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			format := tc.format
			if format == "" {
				format = api.FormatJSON
			}
			rows, err := readAll(t, write(t, "f."+format, []byte(tc.doc)), api.FileOptions{RecordPath: tc.path})
			if tc.fatal != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fatal) {
					t.Fatalf("error %v, want it to say %q", err, tc.fatal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			check(t, rows, tc.rows)
			for i, r := range tc.recs {
				if rows[i].Pos.Record != r {
					t.Errorf("row %d: record %q, want %q", i, rows[i].Pos.Record, r)
				}
			}
		})
	}
}

// A file source resumes after a cursor without returning the rows before it.
func TestFileSourcePages(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("n\n")
	for i := 1; i <= 25; i++ {
		b.WriteString(strings.Repeat("x", i%3+1) + "\n")
	}
	p := write(t, "f.csv", []byte(b.String()))
	src, err := NewFileSource(p, api.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	pg, err := src.Page(context.Background(), "20", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(pg.Rows) != 5 || pg.Rows[0].N != 21 || pg.Rows[0].Pos.Line != 22 || !pg.Done || pg.Next != "25" {
		t.Fatalf("page after 20: %d rows from %d (line %d), done %v, next %q", len(pg.Rows), pg.Rows[0].N, pg.Rows[0].Pos.Line, pg.Done, pg.Next)
	}
}

func TestColumnLetters(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]string{1: "A", 3: "C", 26: "Z", 27: "AA", 52: "AZ", 703: "AAA"} {
		if got := ColumnLetters(n); got != want {
			t.Errorf("column %d: %s, want %s", n, got, want)
		}
	}
}

func TestDetectFormat(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"a.CSV": "csv", "b.xlsx": "xlsx", "c.xml": "xml", "d.json": "json", "e.ndjson": "jsonl"} {
		if got, err := DetectFormat(in, ""); err != nil || got != want {
			t.Errorf("%s: %s %v, want %s", in, got, err, want)
		}
	}
	if _, err := DetectFormat("export.dat", ""); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Errorf("unknown extension: %v", err)
	}
}
