package importer

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/importer/transform"
)

// rowPayload is what a map makes of one row: the row's CI, a child and a related CI.
func rowPayload(serial string) *envelope.CIPayload {
	return &envelope.CIPayload{Source: "import", Observed: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Items: []envelope.CIItem{
		{Ref: transform.RowRef, Class: "linux_server", Attributes: map[string]any{"serial_number": serial}},
		{Ref: "rel0", Class: "network_adapter", Parent: transform.RowRef, Attributes: map[string]any{"mac_address": "02:00:00:00:00:01"}},
		{Ref: "rel1", Class: "application_service", Attributes: map[string]any{"name": "svc-" + serial}},
	}, Relations: []envelope.CIRelation{{Type: "depends_on", From: transform.RowRef, To: "rel1"}}}
}

// Rows merged into one payload keep their refs apart, and a refused payload splits back
// into each row's own payload, exactly as the map made it.
func TestRowsMergeAndSplit(t *testing.T) {
	rows := []groupedRow{{n: 7, seq: 70, p: rowPayload("S7")}, {n: 9, seq: 95, p: rowPayload("S9")}}
	m := mergeRows(rows)
	if len(m.Items) != 6 || len(m.Relations) != 2 {
		t.Fatalf("merged: %d items, %d relations; want 6 and 2", len(m.Items), len(m.Relations))
	}
	refs := map[string]bool{}
	for _, it := range m.Items {
		if refs[it.Ref] {
			t.Fatalf("ref %q twice in the merged payload", it.Ref)
		}
		refs[it.Ref] = true
		if it.Parent != "" && !refs[it.Parent] {
			t.Errorf("item %q: parent %q is not an item before it", it.Ref, it.Parent)
		}
	}
	for _, want := range []string{"7:70:row", "9:95:row", "9:95:rel0"} {
		if !refs[want] {
			t.Errorf("merged refs %v lack %q", refs, want)
		}
	}
	split := splitRows(m)
	if len(split) != 2 {
		t.Fatalf("split into %d rows, want 2", len(split))
	}
	for _, r := range rows {
		got := split[r.n]
		if got.seq != r.seq || !reflect.DeepEqual(got.p, r.p) {
			t.Errorf("row %d split back as seq %d %+v, want seq %d %+v", r.n, got.seq, got.p, r.seq, r.p)
		}
	}
}

func TestPayloadIDs(t *testing.T) {
	cases := []struct {
		id          string
		run         string
		n           int64
		seq         uint64
		multi, isOK bool
	}{
		{payloadID("01RUN", 12, 340), "01RUN", 12, 340, false, true},
		{multiPayloadID("01RUN", 12, 340, 256), "01RUN", 12, 340, true, true},
		{"imp-01RUN-12", "", 0, 0, false, false},
		{"imp-01RUN-12-340-x5", "", 0, 0, false, false},
		{"disc-01RUN-12-340", "", 0, 0, false, false},
	}
	for _, c := range cases {
		run, n, seq, multi, ok := parsePayloadID(c.id)
		if ok != c.isOK || (ok && (run != c.run || n != c.n || seq != c.seq || multi != c.multi)) {
			t.Errorf("parsePayloadID(%q) = %q %d %d multi=%v ok=%v; want %q %d %d multi=%v ok=%v",
				c.id, run, n, seq, multi, ok, c.run, c.n, c.seq, c.multi, c.isOK)
		}
	}
	for _, ref := range []string{"row", "7:x:row", "7:70"} {
		if _, _, _, ok := parseRowRef(ref); ok {
			t.Errorf("parseRowRef(%q) ok, want not a row ref", ref)
		}
	}
}

// Staged rows and outcomes travel in pages; messages written one row each (before pages)
// still read back.
func TestPagesAndSingleMessagesDecode(t *testing.T) {
	staged := []struct {
		name string
		data string
		want []int64
	}{
		{"page", `{"rows":[{"n":3,"pos":{"line":4}},{"n":4,"pos":{"line":5},"cols":{"a":"x"}}]}`, []int64{3, 4}},
		{"one row (before pages)", `{"n":7,"pos":{"line":8},"cols":{"a":"y"}}`, []int64{7}},
		{"empty", `{}`, nil},
	}
	for _, c := range staged {
		rows, err := decodeStaged([]byte(c.data))
		var got []int64
		for _, r := range rows {
			got = append(got, r.N)
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: rows %v %v, want %v", c.name, got, err, c.want)
		}
	}
	outs, err := decodeOutcomes([]byte(`{"n":5,"outcome":"error","reason":"line 6: bad"}`))
	if err != nil || len(outs) != 1 || outs[0].N != 5 || outs[0].Outcome != "error" {
		t.Errorf("single outcome (before pages): %+v %v", outs, err)
	}

	// 600 inserted and 3 errors: pages of at most pageRows, one kind each, ids naming rows.
	var in []outcomeMsg
	for n := int64(1); n <= 603; n++ {
		o := outcomeMsg{N: n, Outcome: "inserted", CI: "ci"}
		if n%200 == 0 {
			o.Outcome, o.Reason = "error", "bad"
		}
		in = append(in, o)
	}
	msgs := outcomeNATSMsgs("RUN", in)
	seen, ids := map[int64]bool{}, map[string]bool{}
	for _, m := range msgs {
		page, err := decodeOutcomes(m.Data)
		if err != nil || len(page) == 0 || len(page) > pageRows {
			t.Fatalf("page on %s: %d outcomes, %v", m.Subject, len(page), err)
		}
		id := m.Header.Get("Nats-Msg-Id")
		if ids[id] {
			t.Errorf("message id %s twice", id)
		}
		ids[id] = true
		for _, o := range page {
			if m.Subject != outcomeSubject("RUN", o.Outcome) {
				t.Errorf("row %d (%s) on %s", o.N, o.Outcome, m.Subject)
			}
			if seen[o.N] {
				t.Errorf("row %d in two pages", o.N)
			}
			seen[o.N] = true
		}
	}
	if len(seen) != len(in) || len(msgs) != 4 {
		t.Errorf("%d rows in %d messages, want %d rows in 4 (3 inserted pages, 1 error page)", len(seen), len(msgs), len(in))
	}
}

// A page joined from its items' JSON is the bytes encoding/json makes of the page (what
// readers of pages staged before joinPage decode), for any number of items.
func TestJoinPageIsThePagesJSON(t *testing.T) {
	rows := []stagedRow{
		{N: 1, Pos: api.Position{Line: 2}, Cols: map[string]any{"host": "a<b>&c", "n": "1"}},
		{N: 2, Pos: api.Position{Line: 3}, Err: "line 3: wrong number of fields"},
		{N: 3, Pos: api.Position{Line: 4}, Cols: map[string]any{"é": "\u2028", "empty": ""}, Next: "c", Last: true},
	}
	for n := 0; n <= len(rows); n++ {
		items, size := [][]byte{}, 0
		raw := []json.RawMessage{}
		for _, r := range rows[:n] {
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			items, raw, size = append(items, b), append(raw, b), size+len(b)
		}
		want, err := json.Marshal(struct {
			Rows []json.RawMessage `json:"rows"`
		}{raw})
		if err != nil {
			t.Fatal(err)
		}
		got := joinPage(`{"rows":[`, items, size)
		if string(got) != string(want) {
			t.Errorf("%d rows:\n got %s\nwant %s", n, got, want)
		}
		back, err := decodeStaged(got)
		if err != nil || len(back) != n || (n > 0 && !reflect.DeepEqual(back, rows[:n])) {
			t.Errorf("%d rows: decoded %+v %v", n, back, err)
		}
	}
}

// A row handed to the transform in process is used as is only when it is what reading it
// back from the stream gives: text columns and valid UTF-8; anything else is decoded.
func TestRoundTripsOnlyWhenDecodingGivesTheRowBack(t *testing.T) {
	cases := []struct {
		name string
		row  stagedRow
		want bool
	}{
		{"text columns", stagedRow{N: 1, Pos: api.Position{Line: 2}, Cols: map[string]any{"host": "a<b>&\u2028", "ram": "4"}}, true},
		{"an empty column", stagedRow{N: 2, Cols: map[string]any{"host": "", "ram": nil}}, true},
		{"no columns", stagedRow{N: 3, Pos: api.Position{Line: 4}, Cols: map[string]any{}, Err: "line 4: 2 fields, the header has 3"}, true},
		{"a paged row", stagedRow{N: 4, Pos: api.Position{Page: "c1", Index: 3, Key: "k"}, Cols: map[string]any{"cn": "x"}, Next: "c2", Last: true}, true},
		{"a number (JSON source)", stagedRow{N: 5, Cols: map[string]any{"ram": 4}}, false},
		{"a bool", stagedRow{N: 6, Cols: map[string]any{"on": true}}, false},
		{"invalid UTF-8 in a value", stagedRow{N: 7, Cols: map[string]any{"host": "a\xffb"}}, false},
		{"invalid UTF-8 in a name", stagedRow{N: 8, Cols: map[string]any{"h\xff": "a"}}, false},
		{"invalid UTF-8 in the reason", stagedRow{N: 9, Err: "bad \xfe"}, false},
	}
	for _, c := range cases {
		if got := roundTrips(c.row); got != c.want {
			t.Errorf("%s: roundTrips %v, want %v", c.name, got, c.want)
			continue
		}
		if !c.want {
			continue
		}
		b, err := json.Marshal(c.row)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeStaged(joinPage(`{"rows":[`, [][]byte{b}, len(b)))
		want := c.row
		if len(want.Cols) == 0 {
			want.Cols = nil // as publishRows keeps it
		}
		if err != nil || len(back) != 1 || !reflect.DeepEqual(back[0], want) {
			t.Errorf("%s: decoded %+v (%v), kept %+v", c.name, back, err, want)
		}
	}
}
