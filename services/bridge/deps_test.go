package bridge_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The bridge binary stays lean: it must not link the CMDB, SQLite, the gateway, the
// discovery service or any other hub-only code (like Tailscale's deptest).
func TestBridgeBinaryIsLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/outpost-dev/outpost/services/bridge/cmd/outpost-bridge").Output()
	if err != nil {
		t.Fatal(err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list returned %d packages: the check would prove nothing", len(deps))
	}
	forbidden := []string{
		"github.com/outpost-dev/outpost/services/cmdb",
		"github.com/outpost-dev/outpost/services/gateway",
		"github.com/outpost-dev/outpost/services/discovery",
		"github.com/outpost-dev/outpost/services/agents",
		"github.com/outpost-dev/outpost/services/outpost",
		"github.com/outpost-dev/outpost/libs/lab",
		"modernc.org/sqlite",
		"github.com/mattn/go-sqlite3",
		// the bridge reports its figures in heartbeats; /metrics is the hub's (libs/telemetry/metrics)
		"github.com/prometheus/client_golang",
		"github.com/outpost-dev/outpost/libs/telemetry/metrics",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("outpost-bridge links %s", d)
			}
		}
	}
}
