// Package jsonscan is the small hand-written JSON reader and string writer under the
// services' fast decoders and encoders of hot messages (CI payloads, receipts, change events,
// staged rows): encoding/json's reflection over those cost the hub microseconds per imported
// row. It does not replace encoding/json: a Reader only ever accepts what encoding/json
// accepts, with the same value, and every method reports false when it cannot decode exactly
// as encoding/json would (a key with escapes or non-ASCII bytes, which encoding/json matches
// with case folding; a number out of range; deep nesting; malformed JSON). The caller then
// gives the whole message to its strict decoder, whose value or error is the answer, so
// error messages and dead-letter reasons stay encoding/json's.
package jsonscan

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of values Value reads (deeper goes to encoding/json, which
// allows far more: giving up is always correct, recursing without bound is not).
const MaxDepth = 32

// Reader reads JSON from its data, front to back. The zero Reader reads nothing; use
// NewReader. A Reader that reported false is left somewhere inside its value: the caller
// gives up on the whole message.
type Reader struct {
	data  []byte
	i     int
	depth int
}

// NewReader reads data from its start.
func NewReader(data []byte) Reader { return Reader{data: data} }

// Space skips white space.
func (r *Reader) Space() {
	for r.i < len(r.data) {
		switch r.data[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// Pos is where the next value starts (after white space).
func (r *Reader) Pos() int { r.Space(); return r.i }

// Peek returns the next byte after white space (0 at the end).
func (r *Reader) Peek() byte {
	r.Space()
	if r.i < len(r.data) {
		return r.data[r.i]
	}
	return 0
}

// End reports whether only white space is left: anything else after a message's value is
// encoding/json's error.
func (r *Reader) End() bool {
	r.Space()
	return r.i == len(r.data)
}

// Object reads an object, calling field for each key with the reader at its value; field
// reads the value and reports false to give up. Keys are escape-free ASCII only (others are
// encoding/json's, with its case folding for struct fields); the key's bytes alias the data.
func (r *Reader) Object(field func(key []byte) bool) bool {
	if r.Peek() != '{' {
		return false
	}
	r.i++
	if r.Peek() == '}' {
		r.i++
		return true
	}
	for {
		key, ok := r.key()
		if !ok || r.Peek() != ':' {
			return false
		}
		r.i++
		if !field(key) {
			return false
		}
		switch r.Peek() {
		case ',':
			r.i++
		case '}':
			r.i++
			return true
		default:
			return false
		}
	}
}

// key reads an object key without escapes or non-ASCII bytes and returns its bytes.
func (r *Reader) key() ([]byte, bool) {
	if r.Peek() != '"' {
		return nil, false
	}
	start := r.i + 1
	for j := start; j < len(r.data); j++ {
		switch c := r.data[j]; {
		case c == '"':
			r.i = j + 1
			return r.data[start:j], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// Array reads an array, calling elem at each element; empty runs for []. A null is not an
// array here: a field then keeps its zero value, which only encoding/json gets right for
// every type.
func (r *Reader) Array(elem func() bool, empty func()) bool {
	if r.Peek() != '[' {
		return false
	}
	r.i++
	if r.Peek() == ']' {
		r.i++
		empty()
		return true
	}
	for {
		if !elem() {
			return false
		}
		switch r.Peek() {
		case ',':
			r.i++
		case ']':
			r.i++
			return true
		default:
			return false
		}
	}
}

// Str reads a string. A string with escapes or invalid UTF-8 is decoded by encoding/json
// (its rules for surrogates and invalid bytes: U+FFFD); any other is its bytes, as there.
func (r *Reader) Str() (string, bool) {
	if r.Peek() != '"' {
		return "", false
	}
	start := r.i
	escaped, ascii := false, true
	for j := start + 1; j < len(r.data); j++ {
		switch c := r.data[j]; {
		case c == '"':
			r.i = j + 1
			if raw := r.data[start+1 : j]; !escaped && (ascii || utf8.Valid(raw)) {
				return string(raw), true
			}
			var s string
			if err := json.Unmarshal(r.data[start:j+1], &s); err != nil {
				return "", false
			}
			return s, true
		case c == '\\':
			escaped = true
			j++ // the escaped byte (a quote does not end the string)
		case c < 0x20:
			return "", false
		case c >= 0x80:
			ascii = false
		}
	}
	return "", false
}

// Time reads a time as encoding/json does through time.Time's UnmarshalJSON (a string only:
// a null leaves the time as it is there, which is the caller's to mimic or not).
func (r *Reader) Time(t *time.Time) bool {
	from := r.Pos()
	if _, ok := r.Str(); !ok {
		return false
	}
	return t.UnmarshalJSON(r.data[from:r.i]) == nil
}

// Null reads a null.
func (r *Reader) Null() bool {
	r.Space()
	return r.literal("null")
}

func (r *Reader) literal(word string) bool {
	if len(r.data)-r.i < len(word) || string(r.data[r.i:r.i+len(word)]) != word {
		return false
	}
	r.i += len(word)
	return true
}

// Int reads a JSON integer (-?(0|[1-9][0-9]*), no fraction or exponent) into an int, as
// encoding/json does into an int field.
func (r *Reader) Int() (int, bool) {
	r.Space()
	j := r.i
	if j < len(r.data) && r.data[j] == '-' {
		j++
	}
	digits := j
	for j < len(r.data) && r.data[j] >= '0' && r.data[j] <= '9' {
		j++
	}
	if j == digits || (r.data[digits] == '0' && j-digits > 1) {
		return 0, false
	}
	if j < len(r.data) && (r.data[j] == '.' || r.data[j] == 'e' || r.data[j] == 'E') {
		return 0, false // not an int: encoding/json's error
	}
	n, err := strconv.ParseInt(string(r.data[r.i:j]), 10, strconv.IntSize)
	if err != nil {
		return 0, false // out of range: encoding/json's error
	}
	r.i = j
	return int(n), true
}

// Number reads a JSON number (its grammar exactly: ParseFloat takes more) as a float64, as
// encoding/json does into an interface{}.
func (r *Reader) Number() (float64, bool) {
	r.Space()
	start, j := r.i, r.i
	digits := func() int {
		n := 0
		for j < len(r.data) && r.data[j] >= '0' && r.data[j] <= '9' {
			j++
			n++
		}
		return n
	}
	if j < len(r.data) && r.data[j] == '-' {
		j++
	}
	switch {
	case j < len(r.data) && r.data[j] == '0':
		j++
	case digits() == 0:
		return 0, false
	}
	if j < len(r.data) && r.data[j] == '.' {
		j++
		if digits() == 0 {
			return 0, false
		}
	}
	if j < len(r.data) && (r.data[j] == 'e' || r.data[j] == 'E') {
		j++
		if j < len(r.data) && (r.data[j] == '+' || r.data[j] == '-') {
			j++
		}
		if digits() == 0 {
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(string(r.data[start:j]), 64)
	if err != nil {
		return 0, false // out of range: encoding/json's error
	}
	r.i = j
	return f, true
}

// AnyObject reads an object into a map as encoding/json does into a map[string]any: a
// repeated key keeps its last value.
func (r *Reader) AnyObject() (map[string]any, bool) {
	if r.depth++; r.depth > MaxDepth {
		return nil, false
	}
	defer func() { r.depth-- }()
	m := map[string]any{}
	ok := r.Object(func(key []byte) bool {
		v, ok := r.Value()
		if ok {
			m[string(key)] = v
		}
		return ok
	})
	return m, ok
}

// Value reads any JSON value as encoding/json does into an interface{}: string, float64,
// bool, nil, []any, map[string]any.
func (r *Reader) Value() (any, bool) {
	switch c := r.Peek(); {
	case c == '"':
		return r.Str()
	case c == '{':
		return r.AnyObject()
	case c == '[':
		if r.depth++; r.depth > MaxDepth {
			return nil, false
		}
		defer func() { r.depth-- }()
		out := []any{}
		ok := r.Array(func() bool {
			v, ok := r.Value()
			out = append(out, v)
			return ok
		}, func() {})
		return out, ok
	case c == 't':
		return true, r.literal("true")
	case c == 'f':
		return false, r.literal("false")
	case c == 'n':
		return nil, r.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return r.Number()
	}
	return nil, false
}
