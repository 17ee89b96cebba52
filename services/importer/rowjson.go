package importer

import (
	"encoding/json"
	"slices"
	"strconv"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/jsonscan"
)

// Hand-written JSON for what a run writes per row: its staged row and its CMDB payload.
// encoding/json's reflection over their column and attribute maps cost the hub about
// 4–5 µs per imported row, with half of that in allocations for the collector. The output
// is byte for byte json.Marshal's (struct fields in order, omitempty, map keys sorted, HTML
// characters escaped): anything but plain text goes through json.Marshal itself, and a
// table and a random test hold both equal (rowjson_internal_test.go). Being equal matters:
// the CMDB recognises a payload sent again by the digest of its bytes.

// marshalStagedRow is json.Marshal(r).
func marshalStagedRow(r *stagedRow) ([]byte, error) {
	b, err := appendStagedRow(make([]byte, 0, 64+32*len(r.Cols)), r)
	if err != nil {
		return json.Marshal(r) // its error, as it words it
	}
	return b, nil
}

func appendStagedRow(b []byte, r *stagedRow) ([]byte, error) {
	b = append(b, `{"n":`...)
	b = strconv.AppendInt(b, r.N, 10)
	b = append(b, `,"pos":`...)
	b = appendPosition(b, &r.Pos)
	var err error
	if len(r.Cols) > 0 {
		b = append(b, `,"cols":`...)
		if b, err = appendMap(b, r.Cols); err != nil {
			return nil, err
		}
	}
	if r.Err != "" {
		b = append(b, `,"err":`...)
		b = jsonscan.AppendString(b, r.Err)
	}
	if r.Next != "" {
		b = append(b, `,"next":`...)
		b = jsonscan.AppendString(b, r.Next)
	}
	if r.Last {
		b = append(b, `,"last":true`...)
	}
	return append(b, '}'), nil
}

func appendPosition(b []byte, p *api.Position) []byte {
	b = append(b, '{')
	first := true
	name := func(n string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, n...)
		b = append(b, `":`...)
	}
	str := func(n, v string) {
		if v != "" {
			name(n)
			b = jsonscan.AppendString(b, v)
		}
	}
	num := func(n string, v int64) {
		if v != 0 {
			name(n)
			b = strconv.AppendInt(b, v, 10)
		}
	}
	num("line", p.Line)
	str("sheet", p.Sheet)
	num("row", p.Row)
	str("cell", p.Cell)
	str("record", p.Record)
	num("offset", p.Offset)
	str("page", p.Page)
	num("index", int64(p.Index))
	str("key", p.Key)
	return append(b, '}')
}

// marshalPayload is json.Marshal(p).
func marshalPayload(p *envelope.CIPayload) ([]byte, error) {
	n := 64
	for _, it := range p.Items {
		n += 64 + 48*len(it.Attributes)
	}
	b, err := appendPayload(make([]byte, 0, n), p)
	if err != nil {
		return json.Marshal(p)
	}
	return b, nil
}

func appendPayload(b []byte, p *envelope.CIPayload) ([]byte, error) {
	b = append(b, `{"source":`...)
	b = jsonscan.AppendString(b, p.Source)
	b = append(b, `,"observed":`...)
	t, err := p.Observed.MarshalJSON()
	if err != nil {
		return nil, err
	}
	b = append(b, t...)
	b = append(b, `,"items":`...)
	if p.Items == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range p.Items {
			it := &p.Items[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"ref":`...)
			b = jsonscan.AppendString(b, it.Ref)
			b = append(b, `,"class":`...)
			b = jsonscan.AppendString(b, it.Class)
			if it.NativeKey != "" {
				b = append(b, `,"native_key":`...)
				b = jsonscan.AppendString(b, it.NativeKey)
			}
			if it.Parent != "" {
				b = append(b, `,"parent":`...)
				b = jsonscan.AppendString(b, it.Parent)
			}
			b = append(b, `,"attributes":`...)
			if b, err = appendMap(b, it.Attributes); err != nil {
				return nil, err
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if len(p.Relations) > 0 {
		b = append(b, `,"relations":[`...)
		for i, r := range p.Relations {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"type":`...)
			b = jsonscan.AppendString(b, r.Type)
			b = append(b, `,"from":`...)
			b = jsonscan.AppendString(b, r.From)
			b = append(b, `,"to":`...)
			b = jsonscan.AppendString(b, r.To)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

// appendMap appends m with its keys sorted, as encoding/json does (null when nil).
func appendMap(b []byte, m map[string]any) ([]byte, error) {
	if m == nil {
		return append(b, "null"...), nil
	}
	var small [16]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonscan.AppendString(b, k)
		b = append(b, ':')
		if b, err = appendValue(b, m[k]); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// appendValue appends v: text and null here, anything else as json.Marshal writes it
// (a value's JSON does not depend on where it is).
func appendValue(b []byte, v any) ([]byte, error) {
	switch t := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return jsonscan.AppendString(b, t), nil
	case bool:
		return strconv.AppendBool(b, t), nil
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, j...), nil
}

// encodedPayload is a CI payload with its JSON made by marshalPayload, for the bus's
// publisher (envelope.Encoded: sent as they are; json.Marshal, through MarshalJSON, gives
// the same bytes).
type encodedPayload struct {
	p    *envelope.CIPayload
	data []byte
}

func (e *encodedPayload) CEType() string               { return envelope.TypeCI }
func (e *encodedPayload) Validate() error              { return e.p.Validate() }
func (e *encodedPayload) MarshalJSON() ([]byte, error) { return e.data, nil }
func (e *encodedPayload) EncodedJSON() []byte          { return e.data }

// payloadBody is p for the bus's publisher, encoded by marshalPayload (p itself when that
// fails: the publisher then reports json.Marshal's error).
func payloadBody(p *envelope.CIPayload) envelope.Body {
	data, err := marshalPayload(p)
	if err != nil {
		return p
	}
	return &encodedPayload{p: p, data: data}
}

// marshalOutcome is json.Marshal(o) (a string field always encodes, so it never fails).
func marshalOutcome(o *outcomeMsg) []byte {
	b := make([]byte, 0, 96+len(o.Reason))
	b = append(b, `{"n":`...)
	b = strconv.AppendInt(b, o.N, 10)
	if o.RowSeq != 0 {
		b = append(b, `,"row_seq":`...)
		b = strconv.AppendUint(b, o.RowSeq, 10)
	}
	b = append(b, `,"pos":`...)
	b = appendPosition(b, &o.Pos)
	b = append(b, `,"outcome":`...)
	b = jsonscan.AppendString(b, o.Outcome)
	if o.Reason != "" {
		b = append(b, `,"reason":`...)
		b = jsonscan.AppendString(b, o.Reason)
	}
	if o.CI != "" {
		b = append(b, `,"ci":`...)
		b = jsonscan.AppendString(b, o.CI)
	}
	return append(b, '}')
}
