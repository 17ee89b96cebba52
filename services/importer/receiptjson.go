package importer

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/jsonscan"
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

// receiptReader is the shared JSON reader with the receipt's item outcomes on top.
type receiptReader struct{ jsonscan.Reader }

func fastReceipt(data []byte) (*envelope.Ingested, bool) {
	d := receiptReader{jsonscan.NewReader(data)}
	in := &envelope.Ingested{}
	seen := 0
	ok := d.Object(func(key []byte) bool {
		var bit int
		ok := false
		switch string(key) {
		case "payload":
			bit = 1
			in.Payload, ok = d.Str()
		case "source":
			bit = 2
			in.Source, ok = d.Str()
		case "items":
			bit = 4
			in.Items, ok = d.Int()
		case "created":
			bit = 8
			in.Created, ok = d.Int()
		case "updated":
			bit = 16
			in.Updated, ok = d.Int()
		case "unchanged":
			bit = 32
			in.Unchanged, ok = d.Int()
		case "conflicts":
			bit = 64
			in.Conflicts, ok = d.Int()
		case "skipped":
			bit = 128
			in.Skipped, ok = d.Int()
		case "time":
			bit = 256
			ok = d.Time(&in.Time)
		case "refs":
			bit = 512
			in.Refs = map[string]envelope.ItemOutcome{}
			ok = d.Object(func(ref []byte) bool {
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
	return in, d.End() // trailing data: the strict decoder's error
}

func (d *receiptReader) itemOutcome(o *envelope.ItemOutcome) bool {
	seen := 0
	return d.Object(func(key []byte) bool {
		var bit int
		ok := false
		switch string(key) {
		case "outcome":
			bit = 1
			o.Outcome, ok = d.Str()
		case "ci":
			bit = 2
			o.CI, ok = d.Str()
		case "reason":
			bit = 4
			o.Reason, ok = d.Str()
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	})
}
