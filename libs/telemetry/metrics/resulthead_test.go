package metrics

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// TestReadResultHead: the observer reads of a result exactly what json.Unmarshal reads, on
// the bridges' encoder output and on hand-written variants; the fast path declines what it
// does not handle, and malformed input is an error as before.
func TestReadResultHead(t *testing.T) {
	at := time.Date(2026, 11, 29, 10, 0, 0, 123456789, time.UTC)
	encoded := func(r *envelope.Result) string {
		_, data, err := envelope.Encode(envelope.Meta{ID: r.ID, Source: "/agents/lab/br-1", Time: at}, r)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	base := envelope.Result{ID: "p-1-0", Probe: "p", App: "discovery", Agent: "br-1", Site: "lab", Kind: "tcp_scan",
		Status: envelope.StatusOK, Final: true, Attempt: 1, Started: at, Finished: at.Add(time.Second)}
	withData := base
	withData.Data = []byte(`{"addresses":4,"open":[{"ip":"127.77.0.1","banner":"a \"quoted\" }] brace"}],"n":null}`)
	withError := base
	withError.Status, withError.Final, withError.Error = envelope.StatusError, false, &envelope.Error{Code: "timeout", Message: `a "message" with {braces}`}
	cases := []struct {
		name     string
		in       string
		fast     bool // the fast path reads it
		wantErr  bool
		wantKind string
	}{
		{"encoder output", encoded(&base), true, false, "tcp_scan"},
		{"encoder output with nested data", encoded(&withData), true, false, "tcp_scan"},
		{"encoder output with an error", encoded(&withError), true, false, "tcp_scan"},
		{"spaces and newlines", "{ \"kind\" : \"echo\" ,\n \"status\":\"ok\", \"final\": true, \"data\" : [1, 2] }\n", true, false, "echo"},
		{"empty object", "{}", true, false, ""},
		{"data null", `{"kind":"echo","data":null}`, true, false, "echo"},
		{"a number and a literal skipped", `{"seq":12,"attempt":-1.5e3,"x":false,"kind":"echo"}`, true, false, "echo"},
		{"last duplicate wins", `{"kind":"a","kind":"b"}`, true, false, "b"},
		{"escape in kind", `{"kind":"ec\u0068o"}`, false, false, "echo"},
		{"member name in another case", `{"Kind":"echo"}`, false, false, "echo"},
		{"time not RFC 3339", `{"kind":"echo","started":"yesterday"}`, false, true, ""},
		{"final not a bool", `{"kind":"echo","final":"yes"}`, false, true, ""},
		{"truncated", `{"kind":"echo","data":{"a":1}`, false, true, ""},
		{"trailing data", `{"kind":"echo"} {}`, false, true, ""},
		{"not an object", `["kind","echo"]`, false, true, ""},
		{"empty", ``, false, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, fast := scanResultHead([]byte(tc.in))
			if fast != tc.fast {
				t.Errorf("fast path took it: %v, want %v", fast, tc.fast)
			}
			got, err := readResultHead([]byte(tc.in))
			var want resultHead
			wantErr := json.Unmarshal([]byte(tc.in), &want)
			if (err != nil) != tc.wantErr || (wantErr != nil) != tc.wantErr {
				t.Fatalf("err %v (json.Unmarshal: %v), want error %v", err, wantErr, tc.wantErr)
			}
			if err != nil {
				return
			}
			if got.Kind != want.Kind || got.Kind != tc.wantKind || got.Status != want.Status || got.Final != want.Final ||
				!got.Started.Equal(want.Started) || !got.Finished.Equal(want.Finished) || !bytes.Equal(got.Data, want.Data) {
				t.Fatalf("read %+v, json.Unmarshal reads %+v (kind want %q)", got, want, tc.wantKind)
			}
		})
	}
}
