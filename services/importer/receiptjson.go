package importer

import (
	"context"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// receiptHandler is bus.Decoded(h) for the CMDB's receipts, with a hand-written decoder for
// their body: a receipt names each of its payload's rows (256) under refs, and encoding/json's
// reflection over them cost the hub about 2–3 µs per imported row. The fast decoder accepts
// only what envelope's strict decoder accepts, with the same value; on anything else — a
// field in another case, unknown or repeated, a null, a number that is not an int, malformed
// JSON — it gives up and envelope's decoder answers (its value or its error). A table and a
// mutation test hold both equal (receiptjson_internal_test.go).
func receiptHandler(h func(context.Context, envelope.Meta, *envelope.Ingested) error) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		meta, in, err := decodeReceipt(msg.Metadata.Get, msg.Payload)
		if err != nil {
			return err
		}
		return h(msg.Context(), meta, in)
	}
}

func decodeReceipt(get func(string) string, data []byte) (envelope.Meta, *envelope.Ingested, error) {
	if meta, err := envelope.ReadMeta(get); err == nil && meta.Type == envelope.TypeIngested {
		if in, ok := fastReceipt(data); ok {
			if err := in.Validate(); err != nil {
				return meta, nil, err
			}
			return meta, in, nil
		}
	}
	return envelope.DecodeIntoWith[*envelope.Ingested](get, data)
}

func fastReceipt(data []byte) (*envelope.Ingested, bool) {
	d := jsonReader{data: data}
	in := &envelope.Ingested{}
	seen := 0
	ok := d.object(func(key []byte) bool {
		var bit int
		ok := false
		switch string(key) {
		case "payload":
			bit = 1
			in.Payload, ok = d.str()
		case "source":
			bit = 2
			in.Source, ok = d.str()
		case "items":
			bit = 4
			in.Items, ok = d.integer()
		case "created":
			bit = 8
			in.Created, ok = d.integer()
		case "updated":
			bit = 16
			in.Updated, ok = d.integer()
		case "unchanged":
			bit = 32
			in.Unchanged, ok = d.integer()
		case "conflicts":
			bit = 64
			in.Conflicts, ok = d.integer()
		case "skipped":
			bit = 128
			in.Skipped, ok = d.integer()
		case "time":
			bit = 256
			from := d.pos()
			if _, ok = d.str(); ok {
				ok = in.Time.UnmarshalJSON(data[from:d.i]) == nil
			}
		case "refs":
			bit = 512
			in.Refs = map[string]envelope.ItemOutcome{}
			ok = d.object(func(ref []byte) bool {
				var o envelope.ItemOutcome
				if !d.itemOutcome(&o) {
					return false
				}
				in.Refs[string(ref)] = o
				return true
			})
		}
		if !ok || seen&bit != 0 {
			return false // unknown or repeated: encoding/json's answer
		}
		seen |= bit
		return true
	})
	if !ok {
		return nil, false
	}
	d.space()
	return in, d.i == len(data)
}

func (d *jsonReader) itemOutcome(o *envelope.ItemOutcome) bool {
	seen := 0
	return d.object(func(key []byte) bool {
		var bit int
		ok := false
		switch string(key) {
		case "outcome":
			bit = 1
			o.Outcome, ok = d.str()
		case "ci":
			bit = 2
			o.CI, ok = d.str()
		case "reason":
			bit = 4
			o.Reason, ok = d.str()
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	})
}

// jsonReader reads JSON from data at i; every method reports false when it gives up.
type jsonReader struct {
	data []byte
	i    int
}

func (d *jsonReader) space() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// pos is where the next value starts.
func (d *jsonReader) pos() int { d.space(); return d.i }

func (d *jsonReader) peek() byte {
	d.space()
	if d.i < len(d.data) {
		return d.data[d.i]
	}
	return 0
}

// object reads an object, calling field for each key (escape-free ASCII keys only: others
// are encoding/json's, with its case folding) with the reader at its value.
func (d *jsonReader) object(field func(key []byte) bool) bool {
	if d.peek() != '{' {
		return false
	}
	d.i++
	if d.peek() == '}' {
		d.i++
		return true
	}
	for {
		if d.peek() != '"' {
			return false
		}
		start, end := d.i+1, -1
		for j := start; j < len(d.data); j++ {
			if c := d.data[j]; c == '"' {
				end = j
				break
			} else if c == '\\' || c < 0x20 || c >= 0x80 {
				return false
			}
		}
		if end < 0 {
			return false
		}
		d.i = end + 1
		if d.peek() != ':' {
			return false
		}
		d.i++
		if !field(d.data[start:end]) {
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

// str reads a string: its bytes when they need no decoding, else encoding/json's reading.
func (d *jsonReader) str() (string, bool) {
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
			j++
		case c < 0x20:
			return "", false
		case c >= 0x80:
			ascii = false
		}
	}
	return "", false
}

// integer reads a JSON integer (-?(0|[1-9][0-9]*)) into an int, as encoding/json does.
func (d *jsonReader) integer() (int, bool) {
	d.space()
	j := d.i
	if j < len(d.data) && d.data[j] == '-' {
		j++
	}
	digits := j
	for j < len(d.data) && d.data[j] >= '0' && d.data[j] <= '9' {
		j++
	}
	if j == digits || (d.data[digits] == '0' && j-digits > 1) {
		return 0, false
	}
	if j < len(d.data) && (d.data[j] == '.' || d.data[j] == 'e' || d.data[j] == 'E') {
		return 0, false // not an int: encoding/json's error
	}
	n, err := strconv.ParseInt(string(d.data[d.i:j]), 10, strconv.IntSize)
	if err != nil {
		return 0, false
	}
	d.i = j
	return int(n), true
}
