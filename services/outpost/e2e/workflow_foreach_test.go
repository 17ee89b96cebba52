package e2e

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/lab"
)

// A for_each over 500 lab hosts with concurrency 50, through `outpost up` and a real
// bridge: each item is an ssh_exec of a short command on its host, with the stored
// credential of the host's user. Every host executes the command exactly once, and the lab,
// which counts concurrent exec sessions across its SSH servers, never sees more than 50 —
// and sees more than half of that (the bridge's pool is set larger, so the step's
// concurrency is the bound).
func TestWorkflowForEachLabHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("500 SSH sessions: not in -short")
	}
	t.Parallel()
	const (
		cidr        = "127.77.64.0/21"
		hosts       = 500
		concurrency = 50
		command     = "sleep 1; hostname"
	)
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 1600, Seed: 11})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	defer l.Close()
	users := map[string]string{} // SSH user → password
	var items []string           // "<ip>|<credential>"
	var ips []string
	for _, mh := range l.Manifest().Hosts {
		if mh.Hostile || mh.Class != "linux_server" || mh.Credentials.SSH == nil || len(items) == hosts {
			continue
		}
		c := mh.Credentials.SSH
		users[c.Username] = c.Password
		items = append(items, mh.IP+"|ssh-"+c.Username)
		ips = append(ips, mh.IP)
	}
	if len(items) < hosts {
		t.Fatalf("the lab has %d linux servers with SSH, want %d", len(items), hosts)
	}
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "lab", cidr, true)
	// the bridge's expedited pool (20 by default) is not what bounds the items here
	startBridge(t, h, "lab", "br1", tok, "--pool-expedited", "200")
	h.waitStatus(t, "br1", "up")
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	for _, u := range names {
		h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": "ssh-" + u, "type": "ssh", "site": "lab",
			"username": u, "secret": users[u]}, nil)
	}
	h.mustAPI(t, "POST", "/api/v1/workflows", api.AddRequest{File: "fleet.yaml", YAML: fmt.Sprintf(`
name: fleet
inputs:
  hosts: {required: true}
steps:
  - id: run
    kind: ssh_exec
    site: lab
    for_each: '${{ split(inputs.hosts, ",") }}'
    concurrency: %d
    target: '${{ split(item, "|")[0] }}'
    credentials: ['${{ split(item, "|")[1] }}']
    params: {commands: [%q]}
    timeout: 5m
`, concurrency, command)}, nil)
	l.ResetExecPeak()
	var run api.Run
	h.mustAPI(t, "POST", "/api/v1/workflows/fleet/runs", map[string]any{"inputs": map[string]string{"hosts": strings.Join(items, ",")}}, &run)
	var r api.Run
	eventually(t, 10*time.Minute, func() error {
		h.mustAPI(t, "GET", "/api/v1/workflow-runs/"+run.ID, nil, &r)
		if r.State != api.RunRunning {
			return nil
		}
		done := 0
		for _, st := range r.Steps {
			if st.Parent == "run" && st.State == api.StepSucceeded {
				done++
			}
		}
		return fmt.Errorf("%d of %d items done", done, hosts)
	})
	if r.State != api.RunCompleted {
		t.Fatalf("run %s: %s", r.State, r.Reason)
	}
	_, peak := l.ExecConcurrency()
	t.Logf("%d hosts, peak of concurrent exec sessions %d (limit %d)", hosts, peak, concurrency)
	if peak > concurrency {
		t.Errorf("the lab saw %d exec sessions at once; the step's concurrency is %d", peak, concurrency)
	}
	if peak < concurrency/2 {
		t.Errorf("the lab saw at most %d exec sessions at once: the items did not run %d at a time", peak, concurrency)
	}
	for _, ip := range ips {
		if n := l.Execs(ip, command); n != 1 {
			t.Errorf("%s executed the command %d times, want 1", ip, n)
		}
	}
	if os.Getenv("OUTPOST_E2E_VERBOSE") != "" {
		t.Logf("run %s: %d steps", r.ID, len(r.Steps))
	}
}
