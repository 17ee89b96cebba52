package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// Events from a site's collectors and the API become alerts on the hub, through `outpost
// up` and a bridge process: duplicates counted into one alert, a hub outage losing nothing
// (the bridge's outbox keeps what the webhook took meanwhile), then ack, silence and close
// through the CLI.
func TestEventsBecomeAlerts(t *testing.T) {
	h := startHub(t, t.TempDir())
	token := h.addSite(t, "ev", "127.77.62.0/24", true)
	syslogAddr, webhookAddr := freeAddr(t), freeAddr(t)
	const key = "e2e-webhook-key-0123456789"
	t.Setenv("OUTPOST_BRIDGE_WEBHOOK_KEY", key)
	b := startBridge(t, h, "ev", "ev-br", token, "--collect-syslog", syslogAddr, "--collect-webhook", webhookAddr)
	h.waitStatus(t, b.name, "up")

	cli := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command(filepath.Join(binDir, "outpost"), append([]string{"--server", "http://" + h.http, "--data", h.dir}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("outpost %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	alerts := func() map[string]api.Alert {
		t.Helper()
		var out api.AlertsListResponse
		if err := json.Unmarshal(cli("alerts", "ls", "-o", "json"), &out); err != nil {
			t.Fatal(err)
		}
		byNode := map[string]api.Alert{}
		for _, a := range out.Items {
			byNode[a.Node] = a
		}
		return byNode
	}
	post := func(n int) {
		t.Helper()
		ev := map[string]string{"node": "storm-node", "type": "cpu", "resource": "cpu0", "metric": "load", "severity": "major", "message": "load high"}
		evs := make([]map[string]string, n)
		for i := range evs {
			evs[i] = ev
		}
		body, _ := json.Marshal(evs)
		req, _ := http.NewRequest(http.MethodPost, "http://"+webhookAddr+"/", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("webhook: %d", resp.StatusCode)
		}
	}

	conn, err := net.Dial("udp", syslogAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("<27>1 2026-03-02T09:00:00Z db-01 postgres - - - e2e-syslog replication lag\n")); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		post(100)
	}
	cli("events", "send", "--node", "api-node", "--type", "backup", "--severity", "critical", "--message", "e2e-api backup failed")
	eventually(t, 30*time.Second, func() error {
		as := alerts()
		if a := as["storm-node"]; a.Count != 300 || a.State != api.StateOpen {
			return fmt.Errorf("storm alert %+v, want count 300 open", a)
		}
		if a := as["db-01"]; a.Message != "e2e-syslog replication lag" || a.Severity != api.SeverityMajor || a.Source != api.SourceSyslog {
			return fmt.Errorf("syslog alert %+v", a)
		}
		if a := as["api-node"]; a.Message != "e2e-api backup failed" || a.Site != "hub" || a.Source != api.SourceAPI {
			return fmt.Errorf("api alert %+v", a)
		}
		return nil
	})

	// The hub goes away; the webhook keeps taking events into the bridge's outbox.
	h.proc.kill(t)
	post(100)
	h.restart(t)
	eventually(t, 60*time.Second, func() error {
		if a := alerts()["storm-node"]; a.Count != 400 {
			return fmt.Errorf("storm alert count %d after the outage, want 400", a.Count)
		}
		return nil
	})

	id := alerts()["storm-node"].ID
	if out := cli("alerts", "ack", id); !strings.Contains(string(out), api.StateAcknowledged) {
		t.Errorf("alerts ack: %s", out)
	}
	cli("silences", "add", "--match", "node=db-01", "--for", "2h")
	eventually(t, 30*time.Second, func() error {
		if a := alerts()["db-01"]; len(a.SilencedBy) != 1 {
			return fmt.Errorf("db-01 silenced by %v, want one silence", a.SilencedBy)
		}
		return nil
	})
	if out := cli("silences", "ls"); !strings.Contains(string(out), "node=db-01") {
		t.Errorf("silences ls: %s", out)
	}
	cli("alerts", "close", id)
	if a := alerts()["storm-node"]; a.State != api.StateClosed || a.CloseReason != api.ClosedByUser {
		t.Errorf("after close: %+v", a)
	}
	if out := cli("alerts", "show", id); !strings.Contains(string(out), "load high") {
		t.Errorf("alerts show: %s", out)
	}
}
