package envelope_test

import (
	"testing"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// encodedCI is a CI payload whose producer made its JSON.
type encodedCI struct {
	envelope.CIPayload
	data []byte
}

func (e *encodedCI) EncodedJSON() []byte { return e.data }

// An envelope.Encoded body is sent as its producer encoded it, after its own validation.
func TestEncodeSendsEncodedBodiesAsTheyAre(t *testing.T) {
	data := []byte(`{"source":"import","observed":"0001-01-01T00:00:00Z","items":[{"ref":"a","class":"server","attributes":null}]}`)
	body := &encodedCI{CIPayload: envelope.CIPayload{Source: "import", Items: []envelope.CIItem{{Ref: "a", Class: "server"}}}, data: data}
	h, got, err := envelope.Encode(envelope.Meta{ID: "p1", Source: "/services/importer"}, body)
	if err != nil || string(got) != string(data) || h.Get(envelope.HeaderType) != envelope.TypeCI {
		t.Fatalf("Encode: %s, type %q, err %v; want the producer's bytes, type %s", got, h.Get(envelope.HeaderType), err, envelope.TypeCI)
	}
	meta, p, err := envelope.DecodeInto[*envelope.CIPayload](h, got)
	if err != nil || meta.ID != "p1" || p.Items[0].Ref != "a" {
		t.Fatalf("decoded back: %+v %+v %v", meta, p, err)
	}
	body.Source = "" // invalid: refused before its bytes are used
	if _, _, err := envelope.Encode(envelope.Meta{ID: "p2"}, body); err == nil {
		t.Fatal("Encode took a body that fails its validation")
	}
}
