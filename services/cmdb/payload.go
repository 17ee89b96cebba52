package cmdb

import (
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/jsonscan"
)

// decodePayload is envelope.DecodeIntoWith[*envelope.CIPayload] with a hand-written decoder
// for the body: encoding/json's reflection cost the hub about 4 µs per imported row (and
// half its allocations went to the collector). The fast decoder only ever accepts what the
// strict decoder accepts, with the same value: anything it does not handle as encoding/json
// would — a field name in another case, an unknown or repeated field, a null where a value
// belongs, deep nesting, a number out of range, malformed JSON — makes it give up, and the
// message is decoded by envelope's decoder, whose error (or value) is then the answer. So
// error messages and dead-letter reasons stay what they were. A table and a fuzz test hold
// both decoders equal (payload_internal_test.go); the JSON primitives are libs/jsonscan's.
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
	d := payloadDecoder{Reader: jsonscan.NewReader(data)}
	p := &envelope.CIPayload{}
	seen := 0
	ok := d.Object(func(key []byte) bool {
		var bit int
		switch string(key) {
		case "source":
			bit = 1
			p.Source, d.ok = d.Str()
		case "observed":
			bit = 2
			d.ok = d.Time(&p.Observed)
		case "items":
			bit = 4
			d.ok = d.Array(func() bool {
				var it envelope.CIItem
				if !d.item(&it) {
					return false
				}
				p.Items = append(p.Items, it)
				return true
			}, func() { p.Items = []envelope.CIItem{} })
		case "relations":
			bit = 8
			d.ok = d.Array(func() bool {
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
	return p, d.End() // trailing data: the strict decoder's error
}

// payloadDecoder is the shared JSON reader with the payload's own types on top; ok carries a
// field's result out of the closures fastPayload passes to it.
type payloadDecoder struct {
	jsonscan.Reader
	ok bool
}

func (d *payloadDecoder) item(it *envelope.CIItem) bool {
	seen := 0
	return d.Object(func(key []byte) bool {
		var bit int
		ok := false
		switch string(key) {
		case "ref":
			bit = 1
			it.Ref, ok = d.Str()
		case "class":
			bit = 2
			it.Class, ok = d.Str()
		case "native_key":
			bit = 4
			it.NativeKey, ok = d.Str()
		case "parent":
			bit = 8
			it.Parent, ok = d.Str()
		case "attributes":
			bit = 16
			if d.Peek() == 'n' {
				ok = d.Null() // nil map, as encoding/json leaves it
				break
			}
			var m map[string]any
			m, ok = d.AnyObject()
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
	return d.Object(func(key []byte) bool {
		var bit int
		ok := false
		switch string(key) {
		case "type":
			bit = 1
			r.Type, ok = d.Str()
		case "from":
			bit = 2
			r.From, ok = d.Str()
		case "to":
			bit = 4
			r.To, ok = d.Str()
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	})
}
