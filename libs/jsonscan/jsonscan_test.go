package jsonscan_test

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/jsonscan"
	"github.com/outpost-dev/outpost/libs/jsonscan/jsonscantest"
)

// sameAsEncodingJSON reads data as one value with read and checks the answer against
// json.Unmarshal into a T: when the Reader takes the whole of data, encoding/json must take
// it too, with the same value. It reports whether the Reader took it.
func sameAsEncodingJSON[T any](t *testing.T, data []byte, read func(r *jsonscan.Reader) (T, bool)) bool {
	t.Helper()
	r := jsonscan.NewReader(data)
	got, ok := read(&r)
	if !ok || !r.End() {
		return false
	}
	var want T
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatalf("input %q: the Reader took it as %#v, encoding/json rejects it: %v", data, got, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("input %q: the Reader read %#v, encoding/json %#v", data, got, want)
	}
	return true
}

func value(r *jsonscan.Reader) (any, bool)      { return r.Value() }
func str(r *jsonscan.Reader) (string, bool)     { return r.Str() }
func integer(r *jsonscan.Reader) (int, bool)    { return r.Int() }
func number(r *jsonscan.Reader) (float64, bool) { return r.Number() }
func timeOf(r *jsonscan.Reader) (time.Time, bool) {
	var t time.Time
	ok := r.Time(&t)
	return t, ok
}

func TestReaderMatchesEncodingJSON(t *testing.T) {
	deep := strings.Repeat("[", jsonscan.MaxDepth+1) + strings.Repeat("]", jsonscan.MaxDepth+1)
	tests := []struct {
		name string
		data string
		read func(t *testing.T, data []byte) bool
		take bool // the Reader takes it (does not give up)
	}{
		{"object", `{"a":1,"b":[true,false,null],"c":{"d":"e"}}`, anyValue, true},
		{"white space", " { \"a\" :\t[ 1 ,\n{ } ] }\r\n", anyValue, true},
		{"repeated key keeps the last", `{"a":1,"a":2}`, anyValue, true},
		{"empty containers", `[{},[],""]`, anyValue, true},
		{"nesting at the limit", strings.Repeat("[", jsonscan.MaxDepth) + strings.Repeat("]", jsonscan.MaxDepth), anyValue, true},
		{"nesting past the limit", deep, anyValue, false},
		{"escaped key", `{"a\u0041":1}`, anyValue, false},
		{"non-ASCII key", `{"é":1}`, anyValue, false},
		{"trailing comma", `{"a":1,}`, anyValue, false},
		{"missing colon", `{"a" 1}`, anyValue, false},
		{"truncated", `{"a":[1,2`, anyValue, false},
		{"bad literal", `tru`, anyValue, false},
		{"plain string", `"web-1"`, text, true},
		{"UTF-8 string", `"Zürich — 東京"`, text, true},
		{"escapes", `"say \"hi\"\\ \u003c\n\ud83d\ude00 \ud800"`, text, true},
		{"invalid UTF-8", "\"a\xffb\"", text, true},
		{"control character", "\"a\x01\"", text, false},
		{"bad escape", `"\x"`, text, false},
		{"unterminated", `"abc`, text, false},
		{"null is no string", `null`, text, false},
		{"int", `4096`, whole, true},
		{"negative zero int", `-0`, whole, true},
		{"int leading zero", `01`, whole, false},
		{"int with fraction", `1.0`, whole, false},
		{"int with exponent", `1e3`, whole, false},
		{"int out of range", `99999999999999999999`, whole, false},
		{"lone minus", `-`, whole, false},
		{"number", `-1.5e3`, float, true},
		{"number small", `0.25E-2`, float, true},
		{"number leading zero", `01`, float, false},
		{"number plus", `+1`, float, false},
		{"number dot", `1.`, float, false},
		{"number exponent without digits", `1e+`, float, false},
		{"number out of range", `1e999`, float, false},
		{"time", `"2026-12-06T12:00:00.123456789Z"`, clock, true},
		{"time with zone", `"2026-12-06T12:00:00+01:00"`, clock, true},
		{"not a time", `"noon"`, clock, false},
		{"time not a string", `1`, clock, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if took := tc.read(t, []byte(tc.data)); took != tc.take {
				t.Errorf("the Reader took %q: %v, want %v", tc.data, took, tc.take)
			}
		})
	}
}

func anyValue(t *testing.T, data []byte) bool { return sameAsEncodingJSON(t, data, value) }
func text(t *testing.T, data []byte) bool     { return sameAsEncodingJSON(t, data, str) }
func whole(t *testing.T, data []byte) bool    { return sameAsEncodingJSON(t, data, integer) }
func float(t *testing.T, data []byte) bool    { return sameAsEncodingJSON(t, data, number) }
func clock(t *testing.T, data []byte) bool    { return sameAsEncodingJSON(t, data, timeOf) }

// TestObjectAndArray reads fields and elements through the callbacks domain decoders use.
func TestObjectAndArray(t *testing.T) {
	r := jsonscan.NewReader([]byte(` {"n": [1, 2] , "e" : [], "z": null } `))
	var keys []string
	var ns []int
	emptied := false
	ok := r.Object(func(key []byte) bool {
		keys = append(keys, string(key))
		switch string(key) {
		case "n":
			return r.Array(func() bool { n, ok := r.Int(); ns = append(ns, n); return ok }, func() {})
		case "e":
			return r.Array(func() bool { return false }, func() { emptied = true })
		default:
			return r.Null()
		}
	})
	if !ok || !r.End() || !reflect.DeepEqual(keys, []string{"n", "e", "z"}) || !reflect.DeepEqual(ns, []int{1, 2}) || !emptied {
		t.Fatalf("ok %v, end %v, keys %q, elements %v, empty called %v", ok, r.End(), keys, ns, emptied)
	}
	r = jsonscan.NewReader([]byte(`{"a":1}`))
	if r.Object(func([]byte) bool { return false }) {
		t.Error("Object took an object whose field gave up")
	}
	r = jsonscan.NewReader([]byte(`null`))
	if r.Array(func() bool { return true }, func() {}) {
		t.Error("Array took a null")
	}
}

// TestValueMutations reads many corrupted copies of a document both ways.
func TestValueMutations(t *testing.T) {
	base := []byte(`{"name":"web-1","ram_mb":4096,"cpus":2.5,"tags":["a",1.5e-3,null,true,false],"o":{"x":"\u00e9\"\\","y":[]}}`)
	if !anyValue(t, base) {
		t.Fatalf("the Reader gave up on %s", base)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		anyValue(t, jsonscantest.Mutate(rng, base))
	}
}

func FuzzValue(f *testing.F) {
	f.Add([]byte(`{"a":[1,"x",{"y":null}],"b":-0.5e1}`))
	f.Add([]byte(`"\u00e9\"\\\ud800"`))
	f.Fuzz(func(t *testing.T, data []byte) { anyValue(t, data) })
}

func TestAppendStringIsJSONMarshal(t *testing.T) {
	tests := []string{"", "web-1", "say \"hi\"", `a\b`, "<script>&</script>", "tab\there", "\x00\x1f\x7f", "Zürich — 東京",
		"\xff\xfe", "\u2028\u2029", "\ud7ff\ue000", string([]byte{0xed, 0xa0, 0x80})}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 5000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		tests = append(tests, string(b))
	}
	for _, s := range tests {
		sameString(t, s)
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("plain")
	f.Add("<&>\"\\\x01\u2028\xff")
	f.Fuzz(sameString)
}

func sameString(t *testing.T, s string) {
	want, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("json.Marshal(%q): %v", s, err)
	}
	if got := jsonscan.AppendString([]byte("x"), s); string(got) != "x"+string(want) {
		t.Fatalf("AppendString(%q) = %s, json.Marshal %s", s, got[1:], want)
	}
}
