package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkResultPublish: a bridge's results published with acks, from inside HUB (how
// bridges connected before the account split) and from BRIDGES through the service import.
func BenchmarkResultPublish(b *testing.B) {
	h := startAccountsHub(b)
	hubConn, err := nats.Connect(h.srv.ClientURL(), nats.UserInfo("hub", "hub-pw"))
	if err != nil {
		b.Fatal(err)
	}
	defer hubConn.Close()
	bridgeConn, _ := h.bridge(b)
	for _, c := range []struct {
		name string
		nc   *nats.Conn
	}{{"same-account", hubConn}, {"bridges-account", bridgeConn}} {
		b.Run(c.name, func(b *testing.B) {
			js, _ := jetstream.New(c.nc)
			data := make([]byte, 512)
			ctx := context.Background()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if _, err := js.PublishAsync("result.discovery.a.echo.a1", data); err != nil {
					b.Fatal(err)
				}
				if i%1000 == 999 {
					<-js.PublishAsyncComplete()
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
