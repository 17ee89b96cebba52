package discovery

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
)

func TestInScope(t *testing.T) {
	ranges := []string{"127.77.0.0/24", "127.78.0.10-127.78.0.20", "127.79.0.5"}
	exclude := []string{"127.77.0.9/32", "127.77.0.100", "127.78.0.15-127.78.0.16"}
	for ip, want := range map[string]bool{
		"127.77.0.1": true, "127.77.0.9": false, "127.77.0.100": false, "127.77.1.1": false,
		"127.78.0.10": true, "127.78.0.20": true, "127.78.0.21": false, "127.78.0.15": false,
		"127.79.0.5": true, "127.79.0.6": false, "not-an-ip": false, "": false,
	} {
		if got := inScope(ranges, exclude, ip); got != want {
			t.Errorf("inScope(%q) = %v, want %v", ip, got, want)
		}
	}
}

// A bridge reporting a host outside the run's ranges is not believed: its scan result goes
// to the DLQ (the site's own quota) with the reason, and the host appears nowhere.
func TestScanOutsideTheRunIsDeadLettered(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.123.0/28", 4)
	h.bridge.mu.Lock()
	h.bridge.forgeHost = "127.99.0.1" // never dialled: the test bridge only claims it
	h.bridge.mu.Unlock()
	stop := h.startService(ctx)
	defer stop()
	var st StartReply
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
	dlq, err := h.js.Stream(ctx, bus.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		m, err := dlq.GetLastMsgForSubject(ctx, bus.DLQOriginSubject(Service, "lab"))
		if err != nil {
			return err
		}
		if r := m.Header.Get(bus.HeaderDLQReason); !strings.Contains(r, "127.99.0.1") || !strings.Contains(r, "outside run") {
			return fmt.Errorf("reason %q", r)
		}
		return nil
	})
	var v RunView
	h.request(ctx, "run_get", IDRequest{ID: st.Run}, &v)
	for _, hb := range v.Hosts {
		if hb.IP == "127.99.0.1" {
			t.Fatalf("the forged host is in the run: %+v", hb)
		}
	}
	_ = jetstream.ErrMsgNotFound
}
