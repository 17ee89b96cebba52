package importer

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// strs are strings json.Marshal writes as they are and ones it escapes or repairs.
var strs = []string{"", "web-1", "S/N 0042", "a b", "say \"hi\"", `back\slash`, "<tag>&amp;", "tab\there", "line\nbreak",
	"\x00\x1f\x7f", "Zürich", "東京", "emoji 😀", "\u2028\u2029", "bad \xff utf8", "\xed\xa0\x80", "~!@#$%^*()_+{}|:?"}

func TestMarshalStagedRowIsJSONMarshal(t *testing.T) {
	rows := []stagedRow{
		{},
		{N: 1, Pos: api.Position{Line: 2}, Cols: map[string]any{"host": "web-1", "serial": "S-1"}},
		{N: 7, Pos: api.Position{Sheet: "servers", Row: 9, Cell: "C9"}, Err: "servers!C9: not a number"},
		{N: 3, Pos: api.Position{Record: "$.servers[3]", Offset: 120, Page: "p2", Index: 4, Key: "k<1>"}, Cols: map[string]any{
			"n": 1.5, "i": 3, "big": 1e21, "small": 1e-7, "neg": -0.0, "t": true, "f": false, "null": nil,
			"list": []any{"a", 1.0, nil}, "obj": map[string]any{"z": 1, "a": "<b>"}, "num": json.Number("12.50")}},
		{N: 4, Cols: map[string]any{}, Next: "cursor&next", Last: true},
		{N: 5, Cols: map[string]any{"nan": math.NaN()}}, // json.Marshal's error, worded by it
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		r := stagedRow{N: rng.Int64N(1 << 40), Pos: api.Position{Line: rng.Int64N(100), Cell: strs[rng.IntN(len(strs))]},
			Cols: map[string]any{}, Err: strs[rng.IntN(len(strs))]}
		for range rng.IntN(12) {
			r.Cols[strs[rng.IntN(len(strs))]] = strs[rng.IntN(len(strs))]
		}
		rows = append(rows, r)
	}
	for _, r := range rows {
		want, wantErr := json.Marshal(r)
		got, err := marshalStagedRow(&r)
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Fatalf("row %+v: err %v, json.Marshal's %v", r, err, wantErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("row %+v:\n got %s\nwant %s", r, got, want)
		}
	}
	// the rows a CSV gives take the fast path whole: nothing goes to json.Marshal
	b, err := appendStagedRow(nil, &rows[1])
	if err != nil || !bytes.Equal(b, []byte(`{"n":1,"pos":{"line":2},"cols":{"host":"web-1","serial":"S-1"}}`)) {
		t.Errorf("plain row: %s, %v", b, err)
	}
}

func TestMarshalPayloadIsJSONMarshal(t *testing.T) {
	at := time.Date(2026, 12, 6, 12, 0, 0, 123456789, time.UTC)
	payloads := []envelope.CIPayload{
		{},
		{Source: "import", Observed: at, Items: []envelope.CIItem{{Ref: "1:9:host", Class: "linux_server", Attributes: map[string]any{"name": "web-1", "ram_mb": 4096, "cpus": 2.5}}}},
		{Source: "sccm", Observed: at.In(time.FixedZone("x", 3600)), Items: []envelope.CIItem{
			{Ref: "h", Class: "server", NativeKey: "k&1", Attributes: nil},
			{Ref: "n", Class: "network_adapter", Parent: "h", Attributes: map[string]any{}},
		}, Relations: []envelope.CIRelation{{Type: "runs_on", From: "n", To: "h"}}},
		{Source: "import", Items: []envelope.CIItem{}},
		{Source: "import", Observed: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Items: []envelope.CIItem{{Ref: "a"}}}, // json.Marshal's error
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 1000 {
		p := envelope.CIPayload{Source: strs[rng.IntN(len(strs))], Observed: at.Add(time.Duration(rng.Int64N(1e15)))}
		for range 1 + rng.IntN(4) {
			it := envelope.CIItem{Ref: strs[rng.IntN(len(strs))], Class: "linux_server", Attributes: map[string]any{}}
			for range rng.IntN(8) {
				var v any = strs[rng.IntN(len(strs))]
				if rng.IntN(4) == 0 {
					v = rng.Float64() * 1e6
				}
				it.Attributes[strs[rng.IntN(len(strs))]] = v
			}
			p.Items = append(p.Items, it)
		}
		if rng.IntN(2) == 0 {
			p.Relations = append(p.Relations, envelope.CIRelation{Type: "contains", From: p.Items[0].Ref, To: strs[rng.IntN(len(strs))]})
		}
		payloads = append(payloads, p)
	}
	for _, p := range payloads {
		want, wantErr := json.Marshal(p)
		got, err := marshalPayload(&p)
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Fatalf("payload %+v: err %v, json.Marshal's %v", p, err, wantErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("payload %+v:\n got %s\nwant %s", p, got, want)
		}
		if err != nil {
			continue
		}
		// through the envelope as the publisher encodes it: the same bytes as p itself
		_, viaBody, err1 := envelope.Encode(envelope.Meta{ID: "x", Source: "/services/importer"}, payloadBody(&p))
		_, direct, err2 := envelope.Encode(envelope.Meta{ID: "x", Source: "/services/importer"}, &p)
		if (err1 == nil) != (err2 == nil) || !bytes.Equal(viaBody, direct) {
			t.Fatalf("payload %+v through the envelope: %s (%v), want %s (%v)", p, viaBody, err1, direct, err2)
		}
	}
}

func TestMarshalOutcomeIsJSONMarshal(t *testing.T) {
	outs := []outcomeMsg{{}, {N: 1, RowSeq: 7, Pos: api.Position{Line: 3}, Outcome: "inserted", CI: "01M95"},
		{N: 2, Pos: api.Position{Sheet: "s", Row: 4, Cell: "B4"}, Outcome: "error", Reason: "servers!B4: \"x\" is <not> a number"}}
	rng := rand.New(rand.NewPCG(7, 8))
	for range 1000 {
		outs = append(outs, outcomeMsg{N: rng.Int64N(1 << 40), RowSeq: uint64(rng.IntN(3)) * rng.Uint64(), Pos: api.Position{Line: rng.Int64N(9), Record: strs[rng.IntN(len(strs))]},
			Outcome: strs[rng.IntN(len(strs))], Reason: strs[rng.IntN(len(strs))], CI: strs[rng.IntN(len(strs))]})
	}
	for _, o := range outs {
		want, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if got := marshalOutcome(&o); !bytes.Equal(got, want) {
			t.Fatalf("outcome %+v:\n got %s\nwant %s", o, got, want)
		}
	}
}
