package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// TestSecondSignalExitsAtOnce: SIGTERM starts a drain (logged, with its deadline); a second
// signal ends the process at once with a clear line, even with a probe still running that
// the drain would wait for. Both binaries: `outpost up` and `outpost-bridge`.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	h := startHub(t, t.TempDir())
	token := h.addSite(t, "dc1", "127.77.0.0/16", true)
	br := startBridge(t, h, "dc1", "br-1", token)
	h.waitStatus(t, "br-1", "up")

	// A probe the bridge's drain would wait for (up to 30 s).
	go func() {
		b, _ := json.Marshal(map[string]any{"site": "dc1", "kind": "echo", "priority": envelope.PriorityStandard, "timeout": "6m",
			"params": map[string]any{"msg": "slow", "delay": "5m"}})
		req, _ := http.NewRequest("POST", "http://"+h.http+"/api/v1/probes", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+h.token(t))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	_, js := h.serviceConn(t)
	cons := probeConsumer(t, js, "dc1", envelope.PriorityStandard, "echo", bus.LaneAdhoc)
	eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := js.Consumer(ctx, bus.StreamProbes, cons)
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumAckPending != 1 {
			return fmt.Errorf("%d probes taken by the bridge, want 1", info.NumAckPending)
		}
		return nil
	})

	for _, p := range []struct {
		name string
		proc *proc
	}{{"outpost-bridge", br.proc}, {"outpost up", h.proc}} {
		t.Run(p.name, func(t *testing.T) {
			exited := make(chan error, 1)
			go func() { exited <- p.proc.cmd.Wait() }()
			_ = p.proc.cmd.Process.Signal(syscall.SIGTERM)
			eventually(t, 10*time.Second, func() error {
				if !strings.Contains(p.proc.log.String(), "shutting down: draining") {
					return errors.New("no drain line after SIGTERM")
				}
				return nil
			})
			_ = p.proc.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				var ee interface{ ExitCode() int }
				if !errors.As(err, &ee) || ee.ExitCode() != 1 {
					t.Errorf("exit after the second signal: %v, want status 1 (drain not finished)", err)
				}
			case <-time.After(20 * time.Second): // far below the drain's own 30 s wait for the probe
				t.Fatal("still running after the second SIGTERM")
			}
			if out := p.proc.log.String(); !strings.Contains(out, "second signal: exiting at once") {
				t.Errorf("no clear line for the second signal:\n%s", tail(out, 20))
			}
		})
	}
}
