package cmdb

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/jsonscan/jsonscantest"
)

// ciHeaders are the headers of a CI payload message, as a getter.
func ciHeaders(typ string) func(string) string {
	h := map[string]string{envelope.HeaderType: typ, envelope.HeaderID: "p1", envelope.HeaderSource: "/services/importer",
		envelope.HeaderSpecVersion: envelope.SpecVersion}
	return func(k string) string { return h[k] }
}

// samePayloadDecode checks that decodePayload answers data exactly as envelope's strict
// decoder does: the same error text, or the same payload.
func samePayloadDecode(t *testing.T, get func(string) string, data []byte) {
	t.Helper()
	wantMeta, want, wantErr := envelope.DecodeIntoWith[*envelope.CIPayload](get, data)
	gotMeta, got, gotErr := decodePayload(get, data)
	switch {
	case (wantErr == nil) != (gotErr == nil):
		t.Fatalf("input %q: envelope's decoder err %v, decodePayload err %v", data, wantErr, gotErr)
	case wantErr != nil && wantErr.Error() != gotErr.Error():
		t.Fatalf("input %q: envelope's decoder err %q, decodePayload err %q", data, wantErr, gotErr)
	case !reflect.DeepEqual(wantMeta, gotMeta):
		t.Fatalf("input %q: meta %+v, want %+v", data, gotMeta, wantMeta)
	case !reflect.DeepEqual(want, got):
		t.Fatalf("input %q:\ndecodePayload %#v\nenvelope's    %#v", data, got, want)
	}
}

func TestDecodePayloadMatchesEnvelope(t *testing.T) {
	valid := func(s string) string { return s }
	tests := []struct {
		name string
		data string
		fast bool // the hand-written decoder takes it (not handed to encoding/json)
	}{
		{"import rows", valid(`{"source":"import","observed":"2026-12-06T12:00:00.123456789Z","items":[{"ref":"12:7:host","class":"linux_server","attributes":{"name":"web-1","serial_number":"S-1","ram_mb":4096,"cpus":2.5,"on":true,"off":false,"none":null}}]}`), true},
		{"relations and parent", `{"source":"discovery","observed":"2026-12-06T12:00:00+01:00","items":[{"ref":"h","class":"server","native_key":"k","attributes":{"name":"a"}},{"ref":"n","class":"network_adapter","parent":"h","attributes":{"mac":"00:11"}}],"relations":[{"type":"runs_on","from":"n","to":"h"}]}`, true},
		{"white space everywhere", " {\n\t\"source\" : \"x\" ,\r\n \"observed\":\"2026-01-02T03:04:05Z\", \"items\" : [ { \"ref\" : \"a\" , \"class\" : \"server\" , \"attributes\" : { \"n\" : [ 1 , \"two\" , { \"x\" : [ ] } ] , \"o\" : { } } } ] , \"relations\" : [ ] } \n", true},
		{"nested values", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":{"tags":["a","b"],"disk":{"size":-1.5e3,"used":0,"x":0.25E-2}}}]}`, true},
		{"non-ASCII text", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":{"name":"Zürich — 東京 \ufffd"}}]}`, true},
		{"escapes", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":{"q":"say \"hi\"\\ \u003c\n\ud83d\ude00 \ud800"}}]}`, true},
		{"repeated attribute keeps the last", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":{"n":1,"n":2}}]}`, true},
		{"null attributes", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":null}]}`, true},
		{"no observed", `{"source":"x","items":[{"ref":"a","class":"server","attributes":{}}]}`, true},
		{"empty items", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[]}`, true},
		{"invalid UTF-8", "{\"source\":\"x\",\"observed\":\"2026-01-02T03:04:05Z\",\"items\":[{\"ref\":\"a\",\"class\":\"server\",\"attributes\":{\"n\":\"a\xffb\"}}]}", true},
		// given up on: encoding/json's answer
		{"field in another case", `{"Source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":{}}]}`, false},
		{"unknown field", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attrs":{}}]}`, false},
		{"repeated field", `{"source":"x","source":"y","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":{}}]}`, false},
		{"null source", `{"source":null,"observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":{}}]}`, false},
		{"null items", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":null}`, false},
		{"trailing data", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":{}}]} {}`, false},
		{"bad time", `{"source":"x","observed":"yesterday","items":[{"ref":"a","class":"server","attributes":{}}]}`, false},
		{"number grammar", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":{"n":01}}]}`, false},
		{"number out of range", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":{"n":1e999}}]}`, false},
		{"plus sign", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"server","attributes":{"n":+1}}]}`, false},
		{"control character", "{\"source\":\"x\",\"observed\":\"2026-01-02T03:04:05Z\",\"items\":[{\"ref\":\"a\\tb\",\"class\":\"server\",\"attributes\":{\"n\":\"a\x01\"}}]}", false},
		{"truncated", `{"source":"x","observed":"2026-01-02T03:04:05Z","items":[{"ref":"a","class":"ser`, false},
		{"not an object", `["source"]`, false},
		{"empty", ``, false},
		{"deep nesting", `{"source":"x","items":[{"ref":"a","class":"server","attributes":{"n":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}}]}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			samePayloadDecode(t, ciHeaders(envelope.TypeCI), []byte(tc.data))
			if _, ok := fastPayload([]byte(tc.data)); ok != tc.fast {
				t.Errorf("fastPayload took it: %v, want %v", ok, tc.fast)
			}
		})
	}
	t.Run("other type in the headers", func(t *testing.T) {
		samePayloadDecode(t, ciHeaders(envelope.TypeChange), []byte(tests[0].data))
	})
	t.Run("no type in the headers", func(t *testing.T) {
		samePayloadDecode(t, ciHeaders(""), []byte(tests[0].data))
	})
}

// TestDecodePayloadMutations decodes many corrupted copies of real payloads both ways: a
// flipped, dropped or inserted byte must get the same answer from both decoders.
func TestDecodePayloadMutations(t *testing.T) {
	p := envelope.CIPayload{Source: "import", Observed: time.Date(2026, 12, 6, 12, 0, 0, 5, time.UTC),
		Items: []envelope.CIItem{
			{Ref: "1:9:host", Class: "linux_server", Attributes: map[string]any{"name": "web-1", "serial_number": "S-1", "ram_mb": 4096.0, "tags": []any{"a", 1.5, nil, true}}},
			{Ref: "1:9:nic", Class: "network_adapter", Parent: "1:9:host", NativeKey: "k", Attributes: map[string]any{"mac": "00:11", "o": map[string]any{"x": false}}},
		},
		Relations: []envelope.CIRelation{{Type: "runs_on", From: "1:9:nic", To: "1:9:host"}}}
	base, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fastPayload(base); !ok {
		t.Fatalf("fastPayload gave up on json.Marshal's payload %s", base)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	get := ciHeaders(envelope.TypeCI)
	for range 20000 {
		b := jsonscantest.Mutate(rng, base)
		samePayloadDecode(t, get, b)
	}
}

func FuzzDecodePayload(f *testing.F) {
	f.Add([]byte(`{"source":"import","observed":"2026-12-06T12:00:00Z","items":[{"ref":"a","class":"server","attributes":{"n":[1,"x",{"y":null}]}}],"relations":[{"type":"t","from":"a","to":"a"}]}`))
	f.Add([]byte(`{"source":"x","items":[{"ref":"a","class":"server","attributes":{"q":"\u00e9\"\\"}}]}`))
	get := ciHeaders(envelope.TypeCI)
	f.Fuzz(func(t *testing.T, data []byte) { samePayloadDecode(t, get, data) })
}

func TestChangeBodyIsJSONMarshal(t *testing.T) {
	at := time.Date(2026, 12, 6, 12, 0, 0, 120000000, time.UTC)
	changes := []envelope.Change{
		{CI: "01M95", Class: "linux_server", Op: "created", Source: "import", Attributes: []string{"name", "serial_number"}, Time: at},
		{CI: "c", Class: "x", Op: "updated", Time: at.Truncate(time.Second)},
		{CI: "c<1>", Class: "x&y", Op: "stale", Source: "Zürich \"src\"", Attributes: []string{}, Time: time.Time{}.UTC()},
		{CI: "c", Class: "x", Op: "updated", Attributes: []string{"a\x00", "\xff"}, Time: at.In(time.FixedZone("x", 3600))}, // json.Marshal's
		{CI: "c", Class: "x", Op: "updated", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},                            // json.Marshal's error
	}
	for _, c := range changes {
		_, want, wantErr := envelope.Encode(envelope.Meta{ID: "x", Source: "/services/cmdb"}, &c)
		_, got, err := envelope.Encode(envelope.Meta{ID: "x", Source: "/services/cmdb"}, changeBody(&c))
		if (err == nil) != (wantErr == nil) || string(got) != string(want) {
			t.Fatalf("change %+v:\n got %s (%v)\nwant %s (%v)", c, got, err, want, wantErr)
		}
	}
	if _, ok := appendChange(nil, &changes[0]); !ok {
		t.Error("appendChange gave an import's change event to json.Marshal")
	}
}
