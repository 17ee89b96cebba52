package metrics

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// BenchmarkOnResult: the hub's cost to count one echo result (every result on the bus
// passes through it).
func BenchmarkOnResult(b *testing.B) {
	nc := &nats.Conn{} // never used: onResult only reads the message
	js, _ := jetstream.New(nc)
	h, err := NewHub(prometheus.NewRegistry(), HubConfig{NC: nc, JS: js, Now: time.Now})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	r := &envelope.Result{ID: "x", Probe: "p", App: "bench", Agent: "br0", Site: "bench", Kind: "echo", Status: envelope.StatusOK,
		Final: true, Attempt: 1, Started: now, Finished: now, Data: []byte(`{"msg":"123","at":"2026-12-06T07:38:58.123456789Z"}`)}
	hdr, data, err := envelope.Encode(envelope.Meta{ID: r.ID, Source: "/agents/bench/br0", Time: now}, r)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		m := &nats.Msg{Subject: "result.bench.bench.echo.br0", Header: nats.Header{}, Data: data}
		for k, v := range hdr {
			m.Header[k] = v
		}
		m.Header.Set(jetstream.MsgIDHeader, "p-1-"+strconv.Itoa(i))
		h.onResult(m)
	}
}
