package cmdb

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// decodePayload is envelope.DecodeIntoWith[*envelope.CIPayload] with a hand-written decoder
// for the body: encoding/json's reflection cost the hub about 4 µs per imported row (and
// half its allocations went to the collector). The fast decoder only ever accepts what the
// strict decoder accepts, with the same value: anything it does not handle as encoding/json
// would — a field name in another case, an unknown or repeated field, a null where a value
// belongs, deep nesting, a number out of range, malformed JSON — makes it give up, and the
// message is decoded by envelope's decoder, whose error (or value) is then the answer. So
// error messages and dead-letter reasons stay what they were. A table and a fuzz test hold
// both decoders equal (payload_test.go).
func decodePayload(get func(string) string, data []byte) (envelope.Meta, *envelope.CIPayload, error) {
	if meta, err := envelope.ReadMeta(get); err == nil && meta.Type == envelope.TypeCI {
		if p, ok := fastPayload(data); ok {
			if err := p.Validate(); err != nil {
				return meta, nil, err
			}
			return meta, p, nil
		}
	}
	return envelope.DecodeIntoWith[*envelope.CIPayload](get, data)
}

// fastPayload decodes a payload's JSON; ok is false when it gives up (see decodePayload).
func fastPayload(data []byte) (*envelope.CIPayload, bool) {
	d := payloadDecoder{data: data}
	p := &envelope.CIPayload{}
	seen := 0
	ok := d.object(func(key []byte) bool {
		var bit int
		switch string(key) {
		case "source":
			bit = 1
			p.Source, d.ok = d.str()
		case "observed":
			bit = 2
			d.ok = d.time(&p.Observed)
		case "items":
			bit = 4
			d.ok = d.array(func() bool {
				var it envelope.CIItem
				if !d.item(&it) {
					return false
				}
				p.Items = append(p.Items, it)
				return true
			}, func() { p.Items = []envelope.CIItem{} })
		case "relations":
			bit = 8
			d.ok = d.array(func() bool {
				var r envelope.CIRelation
				if !d.relation(&r) {
					return false
				}
				p.Relations = append(p.Relations, r)
				return true
			}, func() { p.Relations = []envelope.CIRelation{} })
		default:
			return false
		}
		if seen&bit != 0 {
			return false // a repeated field: encoding/json merges, not ours to mimic
		}
		seen |= bit
		return d.ok
	})
	if !ok {
		return nil, false
	}
	d.space()
	return p, d.i == len(d.data) // trailing data: the strict decoder's error
}

// payloadDecoder reads JSON from data at i. Every method reports false when it gives up.
type payloadDecoder struct {
	data  []byte
	i     int
	ok    bool
	depth int
}

// maxDepth bounds the nesting of attribute values decoded here (deeper goes to encoding/json).
const maxDepth = 32

func (d *payloadDecoder) space() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space (0 at the end).
func (d *payloadDecoder) peek() byte {
	d.space()
	if d.i < len(d.data) {
		return d.data[d.i]
	}
	return 0
}

// object reads an object, calling field for each key with the decoder at its value.
func (d *payloadDecoder) object(field func(key []byte) bool) bool {
	if d.peek() != '{' {
		return false
	}
	d.i++
	if d.peek() == '}' {
		d.i++
		return true
	}
	for {
		key, ok := d.rawKey()
		if !ok || d.peek() != ':' {
			return false
		}
		d.i++
		if !field(key) {
			return false
		}
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return true
		default:
			return false
		}
	}
}

// array reads an array (not null: the caller's field keeps its zero value then, which only
// encoding/json gets right for every type), calling elem at each element; empty runs for [].
func (d *payloadDecoder) array(elem func() bool, empty func()) bool {
	if d.peek() != '[' {
		return false
	}
	d.i++
	if d.peek() == ']' {
		d.i++
		empty()
		return true
	}
	for {
		if !elem() {
			return false
		}
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return true
		default:
			return false
		}
	}
}

// rawKey reads an object key without escapes and returns its bytes.
func (d *payloadDecoder) rawKey() ([]byte, bool) {
	if d.peek() != '"' {
		return nil, false
	}
	start := d.i + 1
	for j := start; j < len(d.data); j++ {
		switch c := d.data[j]; {
		case c == '"':
			d.i = j + 1
			return d.data[start:j], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false // escaped or non-ASCII keys: encoding/json's (case folding too)
		}
	}
	return nil, false
}

// str reads a string. A string with escapes or invalid UTF-8 is decoded by encoding/json
// (its rules for surrogates and invalid bytes); any other is its bytes, as there.
func (d *payloadDecoder) str() (string, bool) {
	if d.peek() != '"' {
		return "", false
	}
	start := d.i
	escaped, ascii := false, true
	for j := start + 1; j < len(d.data); j++ {
		switch c := d.data[j]; {
		case c == '"':
			d.i = j + 1
			if raw := d.data[start+1 : j]; !escaped && (ascii || utf8.Valid(raw)) {
				return string(raw), true
			}
			var s string
			if err := json.Unmarshal(d.data[start:j+1], &s); err != nil {
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

// time reads a time as time.Time's UnmarshalJSON does from encoding/json (a string only).
func (d *payloadDecoder) time(t *time.Time) bool {
	start := d.peek()
	if start != '"' {
		return false
	}
	from := d.i
	if _, ok := d.str(); !ok {
		return false
	}
	return t.UnmarshalJSON(d.data[from:d.i]) == nil
}

func (d *payloadDecoder) item(it *envelope.CIItem) bool {
	seen := 0
	return d.object(func(key []byte) bool {
		var bit int
		ok := false
		switch string(key) {
		case "ref":
			bit = 1
			it.Ref, ok = d.str()
		case "class":
			bit = 2
			it.Class, ok = d.str()
		case "native_key":
			bit = 4
			it.NativeKey, ok = d.str()
		case "parent":
			bit = 8
			it.Parent, ok = d.str()
		case "attributes":
			bit = 16
			if d.peek() == 'n' {
				ok = d.literal("null") // nil map, as encoding/json leaves it
				break
			}
			var m map[string]any
			m, ok = d.anyObject()
			it.Attributes = m
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	})
}

func (d *payloadDecoder) relation(r *envelope.CIRelation) bool {
	seen := 0
	return d.object(func(key []byte) bool {
		var bit int
		ok := false
		switch string(key) {
		case "type":
			bit = 1
			r.Type, ok = d.str()
		case "from":
			bit = 2
			r.From, ok = d.str()
		case "to":
			bit = 4
			r.To, ok = d.str()
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	})
}

// anyObject reads an object into a map as encoding/json does into interface{} values: a
// repeated key keeps its last value.
func (d *payloadDecoder) anyObject() (map[string]any, bool) {
	if d.depth++; d.depth > maxDepth {
		return nil, false
	}
	defer func() { d.depth-- }()
	m := map[string]any{}
	ok := d.object(func(key []byte) bool {
		v, ok := d.value()
		if ok {
			m[string(key)] = v
		}
		return ok
	})
	return m, ok
}

// value reads any JSON value as encoding/json does into an interface{}.
func (d *payloadDecoder) value() (any, bool) {
	switch c := d.peek(); {
	case c == '"':
		return d.str()
	case c == '{':
		return d.anyObject()
	case c == '[':
		if d.depth++; d.depth > maxDepth {
			return nil, false
		}
		defer func() { d.depth-- }()
		out := []any{}
		ok := d.array(func() bool {
			v, ok := d.value()
			out = append(out, v)
			return ok
		}, func() {})
		return out, ok
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	}
	return nil, false
}

func (d *payloadDecoder) literal(word string) bool {
	if len(d.data)-d.i < len(word) || string(d.data[d.i:d.i+len(word)]) != word {
		return false
	}
	d.i += len(word)
	return true
}

// number reads a JSON number (its grammar exactly: ParseFloat takes more) as a float64.
func (d *payloadDecoder) number() (any, bool) {
	start, j := d.i, d.i
	digits := func() int {
		n := 0
		for j < len(d.data) && d.data[j] >= '0' && d.data[j] <= '9' {
			j++
			n++
		}
		return n
	}
	if j < len(d.data) && d.data[j] == '-' {
		j++
	}
	switch {
	case j < len(d.data) && d.data[j] == '0':
		j++
	case digits() == 0:
		return nil, false
	}
	if j < len(d.data) && d.data[j] == '.' {
		j++
		if digits() == 0 {
			return nil, false
		}
	}
	if j < len(d.data) && (d.data[j] == 'e' || d.data[j] == 'E') {
		j++
		if j < len(d.data) && (d.data[j] == '+' || d.data[j] == '-') {
			j++
		}
		if digits() == 0 {
			return nil, false
		}
	}
	f, err := strconv.ParseFloat(string(d.data[start:j]), 64)
	if err != nil {
		return nil, false // out of range: encoding/json's error
	}
	d.i = j
	return f, true
}
