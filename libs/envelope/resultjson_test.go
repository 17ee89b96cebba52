package envelope

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// TestResultEncoding: a result is encoded byte for byte as json.Marshal encodes it; what the
// hand-written encoder does not handle goes to json.Marshal, with the same output.
func TestResultEncoding(t *testing.T) {
	at := time.Date(2026, 11, 29, 10, 0, 0, 123456789, time.UTC)
	base := Result{ID: "p-1-0", Probe: "p", App: "discovery", Agent: "br-1", Site: "lab", Kind: "tcp_scan",
		Status: StatusOK, Seq: 3, Final: true, Attempt: 2, Started: at, Finished: at.Add(time.Second)}
	with := func(f func(r *Result)) Result { r := base; f(&r); return r }
	cases := []struct {
		name string
		r    Result
		fast bool
	}{
		{"every field", with(func(r *Result) {
			r.Run = "run-9"
			r.Data = json.RawMessage(`{"addresses":4,"open":[{"ip":"127.77.0.1","banner":"a \"q\""}]}`)
		}), true},
		{"no run, attempt, data", with(func(r *Result) { r.Attempt, r.Seq, r.Final = 0, 0, false }), true},
		{"error", with(func(r *Result) {
			r.Status, r.Error = StatusTimeout, &Error{Code: "timeout", Message: "deadline 2026-11-29T10:00:00Z passed"}
		}), true},
		{"zero times", with(func(r *Result) { r.Started, r.Finished = time.Time{}, time.Time{} }), true},
		{"time with an offset", with(func(r *Result) { r.Started = at.In(time.FixedZone("x", 5400)) }), true},
		{"data null", with(func(r *Result) { r.Data = json.RawMessage(`null`) }), true},
		{"message with a quote", with(func(r *Result) { r.Error = &Error{Code: "denied", Message: `target "x" excluded`} }), false},
		{"message with HTML characters", with(func(r *Result) { r.Error = &Error{Code: "x", Message: "a < b & c > d"} }), false},
		{"message with a newline", with(func(r *Result) { r.Error = &Error{Code: "x", Message: "line\nline"} }), false},
		{"non-ASCII", with(func(r *Result) { r.Agent = "brücke" }), false},
		{"year beyond 9999", with(func(r *Result) { r.Finished = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }), false},
		{"data not JSON", with(func(r *Result) { r.Data = json.RawMessage(`{"a":`) }), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, fast := appendResult(nil, &tc.r)
			if fast != tc.fast {
				t.Errorf("encoded by hand: %v, want %v", fast, tc.fast)
			}
			got, gotErr := marshalBody(&tc.r)
			want, wantErr := json.Marshal(&tc.r)
			if (gotErr != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
				t.Fatalf("encoded\n%s (err %v)\njson.Marshal\n%s (err %v)", got, gotErr, want, wantErr)
			}
		})
	}
}

// BenchmarkResultEncode: what a bridge pays to encode one echo result.
func BenchmarkResultEncode(b *testing.B) {
	now := time.Now().UTC()
	r := &Result{ID: "x-1-0", Probe: "x", App: "bench", Agent: "br0", Site: "bench", Kind: "echo", Status: StatusOK,
		Final: true, Attempt: 1, Started: now, Finished: now, Data: []byte(`{"msg":"123","at":"2026-12-06T07:38:58.123456789Z"}`)}
	for _, enc := range []struct {
		name string
		f    func(Body) ([]byte, error)
	}{{"json.Marshal", func(v Body) ([]byte, error) { return json.Marshal(v) }}, {"envelope", marshalBody}} {
		b.Run(enc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := enc.f(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
