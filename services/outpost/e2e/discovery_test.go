package e2e

// Discovery end to end: the real `outpost up` (hub with the discovery and cmdb services)
// and a real `outpost-bridge`, against the lab, compared with its manifest.

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/lab"
)

type discoveryRun struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Reason   string `json:"reason"`
	Counters struct {
		Addresses    int `json:"addresses"`
		Alive        int `json:"alive"`
		Classified   int `json:"classified"`
		PayloadsSent int `json:"payloads_sent"`
		Ingested     int `json:"payloads_ingested"`
		CIsCreated   int `json:"cis_created"`
		CIsUpdated   int `json:"cis_updated"`
		CIsUnchanged int `json:"cis_unchanged"`
		ProbesResent int `json:"probes_resent"`
		ProbesNotRun int `json:"probes_not_run"`
	} `json:"counters"`
	Hosts []struct {
		IP    string `json:"ip"`
		Class string `json:"class"`
	} `json:"hosts"`
	Host *struct {
		ByPorts bool                `json:"by_ports"`
		Failed  map[string][]string `json:"credentials_failed"`
	} `json:"host"`
}

func startDiscovery(t testing.TB, h *testHub, site, cidr string) string {
	t.Helper()
	var out struct {
		Run string `json:"run"`
	}
	h.mustAPI(t, "POST", "/api/v1/discovery/runs", map[string]any{"site": site, "ranges": []string{cidr}}, &out)
	if out.Run == "" {
		t.Fatal("no run id")
	}
	return out.Run
}

func waitDiscovery(t testing.TB, h *testHub, id string, d time.Duration) discoveryRun {
	t.Helper()
	var r discoveryRun
	eventually(t, d, func() error {
		code, b := h.api(t, "GET", "/api/v1/discovery/runs/"+id, nil)
		if code != 200 {
			return fmt.Errorf("run_get %d %s", code, b)
		}
		r = discoveryRun{}
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		switch r.State {
		case "completed", "failed", "canceled":
			return nil
		}
		return fmt.Errorf("run %s is %s %+v", id, r.State, r.Counters)
	})
	return r
}

// ciCount counts the CIs of a class (the list answer holds them under "cis" or "items").
func ciCount(t *testing.T, h *testHub, class string) int {
	t.Helper()
	var out map[string]json.RawMessage
	h.mustAPI(t, "GET", "/api/v1/cis?class="+class+"&limit=500", nil, &out)
	for _, k := range []string{"cis", "items"} {
		var list []json.RawMessage
		if raw, ok := out[k]; ok && json.Unmarshal(raw, &list) == nil {
			return len(list)
		}
	}
	t.Fatalf("cis list: unexpected shape %v", out)
	return 0
}

func TestDiscoveryOfTheLabEndToEnd(t *testing.T) {
	t.Parallel()
	const cidr = "127.77.127.0/24"
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 40, Seed: 11})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	defer l.Close()
	m := l.Manifest()

	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "lab", cidr, true)
	startBridge(t, h, "lab", "br1", tok)
	h.waitStatus(t, "br1", "up")

	// the lab's credentials, except the SSH one of a single host (wrong credentials there)
	wrongHost := ""
	seen := map[string]bool{}
	n := 0
	for _, mh := range m.Hosts {
		if c := mh.Credentials.SSH; c != nil && !seen["ssh"+c.Username+c.Password] {
			seen["ssh"+c.Username+c.Password] = true
			users := 0
			for _, o := range m.Hosts {
				if o.Credentials.SSH != nil && o.Credentials.SSH.Password == c.Password {
					users++
				}
			}
			if users == 1 && wrongHost == "" {
				wrongHost = mh.IP
				continue
			}
			n++
			h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": fmt.Sprintf("ssh-%d", n), "type": "ssh", "site": "lab",
				"username": c.Username, "secret": c.Password}, nil)
		}
		if c := mh.Credentials.SNMP; c != nil && !seen["snmp"+c.Community] {
			seen["snmp"+c.Community] = true
			n++
			h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": fmt.Sprintf("snmp-%d", n), "type": "snmp", "site": "lab",
				"secret": c.Community}, nil)
		}
	}

	id := startDiscovery(t, h, "lab", cidr)
	r := waitDiscovery(t, h, id, 2*time.Minute)
	if r.State != "completed" {
		t.Fatalf("run %s: %s %s", id, r.State, r.Reason)
	}
	classes := map[string]string{}
	for _, hb := range r.Hosts {
		classes[hb.IP] = hb.Class
	}
	linux := 0
	for _, mh := range m.Hosts {
		if classes[mh.IP] != mh.Class {
			t.Errorf("%s (%s): class %q, manifest %q", mh.IP, mh.Name, classes[mh.IP], mh.Class)
		}
		if mh.Class == "linux_server" {
			linux++
		}
	}
	if wrongHost != "" {
		code, b := h.api(t, "GET", "/api/v1/discovery/runs/"+id+"?host="+wrongHost, nil)
		var hr discoveryRun
		_ = json.Unmarshal(b, &hr)
		if code != 200 || hr.Host == nil || !hr.Host.ByPorts || len(hr.Host.Failed["ssh"]) == 0 {
			t.Errorf("host with wrong credentials %s: %d %s", wrongHost, code, b)
		}
	}
	eventually(t, 30*time.Second, func() error {
		if got := ciCount(t, h, "linux_server"); got != linux {
			return fmt.Errorf("linux_server CIs %d, manifest %d", got, linux)
		}
		return nil
	})

	// the same discovery again: the same CIs
	if c := r.Counters; c.CIsCreated == 0 || c.Ingested != c.Classified {
		t.Errorf("first run: the CMDB's receipts are not counted: %+v", c)
	}
	r2 := waitDiscovery(t, h, startDiscovery(t, h, "lab", cidr), 2*time.Minute)
	if r2.State != "completed" || r2.Counters.Classified != r.Counters.Classified {
		t.Fatalf("second run %+v, first %+v", r2.Counters, r.Counters)
	}
	if c := r2.Counters; c.CIsCreated != 0 || c.Ingested != c.Classified || c.CIsUnchanged == 0 {
		t.Errorf("second run of the same discovery: want 0 created and every payload's receipt, got %+v", c)
	}
	time.Sleep(2 * time.Second)
	if got := ciCount(t, h, "linux_server"); got != linux {
		t.Fatalf("after a second run: linux_server CIs %d, manifest %d", got, linux)
	}

	// SIGKILL the hub mid-run and restart it on the same data dir: the run completes
	id3 := startDiscovery(t, h, "lab", cidr)
	time.Sleep(1500 * time.Millisecond)
	_ = h.proc.cmd.Process.Signal(syscall.SIGKILL)
	_, _ = h.proc.cmd.Process.Wait()
	h.restart(t)
	r3 := waitDiscovery(t, h, id3, 3*time.Minute)
	if r3.State != "completed" || r3.Counters.Classified != r.Counters.Classified {
		t.Fatalf("run after a hub crash: %s %s %+v, uninterrupted %+v", r3.State, r3.Reason, r3.Counters, r.Counters)
	}
	if got := ciCount(t, h, "linux_server"); got != linux {
		t.Fatalf("after the crash: linux_server CIs %d, manifest %d", got, linux)
	}
}
