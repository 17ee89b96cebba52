package importer

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/jsonscan/jsonscantest"
)

func receiptHeaders(typ string) func(string) string {
	h := map[string]string{envelope.HeaderType: typ, envelope.HeaderID: "r1", envelope.HeaderSource: "/services/cmdb",
		envelope.HeaderSpecVersion: envelope.SpecVersion}
	return func(k string) string { return h[k] }
}

// sameReceiptDecode checks that decodeReceipt answers data as envelope's strict decoder does.
func sameReceiptDecode(t *testing.T, get func(string) string, data []byte) {
	t.Helper()
	wantMeta, want, wantErr := envelope.DecodeIntoWith[*envelope.Ingested](get, data)
	gotMeta, got, err := decodeReceipt(get, data)
	switch {
	case (wantErr == nil) != (err == nil), wantErr != nil && wantErr.Error() != err.Error():
		t.Fatalf("input %q: envelope's decoder err %v, decodeReceipt err %v", data, wantErr, err)
	case !reflect.DeepEqual(wantMeta, gotMeta) || !reflect.DeepEqual(want, got):
		t.Fatalf("input %q:\ndecodeReceipt %+v %+v\nenvelope's    %+v %+v", data, gotMeta, got, wantMeta, want)
	}
}

func TestDecodeReceiptMatchesEnvelope(t *testing.T) {
	tests := []struct {
		name string
		data string
		fast bool
	}{
		{"import receipt", `{"payload":"run.m.1.9.2","source":"import","items":2,"created":1,"updated":0,"unchanged":1,"time":"2026-12-06T12:00:00.5Z","refs":{"1:9:row":{"outcome":"created","ci":"01M9"},"2:9:row":{"outcome":"unchanged","ci":"01MA"}}}`, true},
		{"conflicts and reasons", ` { "payload" : "p" , "items" : 1 , "created" : 0 , "updated" : 0 , "unchanged" : 0 , "conflicts" : 1 , "skipped" : -0 , "time" : "2026-12-06T12:00:00+01:00" , "refs" : { "a" : { "outcome" : "conflict" , "reason" : "two \"CIs\" <match>" } , "a" : { "outcome" : "skipped" } } } `, true},
		{"no refs", `{"payload":"p","items":0,"created":0,"updated":0,"unchanged":0,"time":"0001-01-01T00:00:00Z","refs":{}}`, true},
		{"non-ASCII ref", `{"payload":"p","items":1,"created":1,"updated":0,"unchanged":0,"time":"2026-12-06T12:00:00Z","refs":{"Zürich":{"outcome":"created"}}}`, false},
		{"float count", `{"payload":"p","items":1.0,"created":1,"updated":0,"unchanged":0,"time":"2026-12-06T12:00:00Z"}`, false},
		{"count out of range", `{"payload":"p","items":99999999999999999999,"created":1,"updated":0,"unchanged":0,"time":"2026-12-06T12:00:00Z"}`, false},
		{"leading zero", `{"payload":"p","items":01,"created":1,"updated":0,"unchanged":0,"time":"2026-12-06T12:00:00Z"}`, false},
		{"null refs", `{"payload":"p","items":1,"created":1,"updated":0,"unchanged":0,"time":"2026-12-06T12:00:00Z","refs":null}`, false},
		{"unknown field", `{"payload":"p","items":1,"created":1,"updated":0,"unchanged":0,"time":"2026-12-06T12:00:00Z","extra":1}`, false},
		{"field in another case", `{"Payload":"p","items":1,"created":1,"updated":0,"unchanged":0,"time":"2026-12-06T12:00:00Z"}`, false},
		{"no payload", `{"items":1,"created":1,"updated":0,"unchanged":0,"time":"2026-12-06T12:00:00Z"}`, true},
		{"bad time", `{"payload":"p","items":1,"created":1,"updated":0,"unchanged":0,"time":"noon"}`, false},
		{"trailing data", `{"payload":"p","items":1,"created":1,"updated":0,"unchanged":0,"time":"2026-12-06T12:00:00Z"}x`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sameReceiptDecode(t, receiptHeaders(envelope.TypeIngested), []byte(tc.data))
			if _, ok := fastReceipt([]byte(tc.data)); ok != tc.fast {
				t.Errorf("fastReceipt took it: %v, want %v", ok, tc.fast)
			}
		})
	}
	sameReceiptDecode(t, receiptHeaders(envelope.TypeCI), []byte(tests[0].data))
}

// Corrupted copies of a real receipt get the same answer from both decoders.
func TestDecodeReceiptMutations(t *testing.T) {
	in := envelope.Ingested{Payload: "run.m.1.9.3", Source: "import", Items: 3, Created: 2, Unchanged: 1, Conflicts: 1,
		Time: time.Date(2026, 12, 6, 12, 0, 0, 7, time.UTC), Refs: map[string]envelope.ItemOutcome{
			"1:9:row": {Outcome: "created", CI: "01M9"}, "2:9:row": {Outcome: "unchanged", CI: "01MA"}, "3:9:row": {Outcome: "conflict", Reason: "x"}}}
	base, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fastReceipt(base); !ok {
		t.Fatalf("fastReceipt gave up on json.Marshal's receipt %s", base)
	}
	rng := rand.New(rand.NewPCG(9, 10))
	get := receiptHeaders(envelope.TypeIngested)
	for range 20000 {
		b := jsonscantest.Mutate(rng, base)
		sameReceiptDecode(t, get, b)
	}
}
