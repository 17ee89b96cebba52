package cli

import (
	"io"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/services/bridge/status"
)

// `status --live` fails only when the bridge does not run; plain `status` also when the hub
// is out of reach (a Kubernetes liveness probe must not restart a bridge over a WAN cut).
func TestStatusLive(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		name          string
		st            status.Status
		plain, liveRC int
	}{
		{"running", status.Status{Phase: status.PhaseRunning, Updated: now, Hub: status.Hub{Connected: true}}, 0, 0},
		{"hub unreachable", status.Status{Phase: status.PhaseRunning, Updated: now}, 1, 0},
		{"stale", status.Status{Phase: status.PhaseRunning, Updated: now.Add(-2 * status.StaleAfter), Hub: status.Hub{Connected: true}}, 1, 1},
		{"stopped", status.Status{Phase: status.PhaseStopped, Updated: now}, 1, 1},
	} {
		dir := t.TempDir()
		if err := status.Write(dir, c.st); err != nil {
			t.Fatal(err)
		}
		if rc := statusMain([]string{"--data", dir}, io.Discard, io.Discard); rc != c.plain {
			t.Errorf("%s: status = %d, want %d", c.name, rc, c.plain)
		}
		if rc := statusMain([]string{"--live", "--data", dir}, io.Discard, io.Discard); rc != c.liveRC {
			t.Errorf("%s: status --live = %d, want %d", c.name, rc, c.liveRC)
		}
	}
}
