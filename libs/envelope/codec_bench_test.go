package envelope

import (
	"encoding/json"
	"testing"
	"time"
)

// BenchmarkProbeDecode: what a bridge pays to read one probe (strict decoding).
func BenchmarkProbeDecode(b *testing.B) {
	params, _ := json.Marshal(map[string]any{"msg": "123", "delay": ""})
	p := &Probe{ID: NewID(), App: "bench", Site: "bench", Priority: PriorityStandard, Kind: "echo", Capability: "echo",
		Params: params, Deadline: time.Now().Add(10 * time.Minute).UTC()}
	h, data, err := Encode(Meta{ID: p.ID, Source: "/services/bench"}, p)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeInto[*Probe](h, data); err != nil {
			b.Fatal(err)
		}
	}
}
