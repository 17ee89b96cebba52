package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/lab"
)

// Topology grouping through the CMDB: after discovering the lab (its switches' LLDP links
// become connected_to relations), a switch going down and the devices connected to it
// failing within the window are one group whose probable root cause is the switch — in the
// API, in `outpost alerts groups`, and in the switch's notification, which names the
// others. `outpost up --correlation-rules` and `--notify` configure it.
func TestTopologyGroupsASwitchAndItsNeighbours(t *testing.T) {
	t.Parallel()
	const cidr = "127.77.128.0/24"
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 40, Seed: 10})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	defer l.Close()
	m := l.Manifest()

	var mu sync.Mutex
	var got []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n map[string]any
		if json.NewDecoder(r.Body).Decode(&n) == nil {
			mu.Lock()
			got = append(got, n)
			mu.Unlock()
		}
	}))
	defer hook.Close()
	rules := t.TempDir()
	if err := os.WriteFile(filepath.Join(rules, "rules.yaml"), []byte(`
grouping: {group_by: [site, node], group_wait: 2s, group_interval: 5s, repeat_interval: 1h}
topology: {window: 2m, relations: [connected_to, runs_on, depends_on, contains]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	h := startHub(t, t.TempDir(), "--correlation-rules", rules, "--notify", "hook="+hook.URL)
	tok := h.addSite(t, "lab", cidr, true)
	startBridge(t, h, "lab", "br1", tok)
	h.waitStatus(t, "br1", "up")
	seen := map[string]bool{}
	for i, mh := range m.Hosts {
		if c := mh.Credentials.SNMP; c != nil && !seen[c.Community] {
			seen[c.Community] = true
			h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": fmt.Sprintf("snmp-%d", i), "type": "snmp", "site": "lab", "secret": c.Community}, nil)
		}
	}
	r := waitDiscovery(t, h, startDiscovery(t, h, "lab", cidr), 2*time.Minute)
	if r.State != "completed" {
		t.Fatalf("discovery: %s %s", r.State, r.Reason)
	}

	// The device the CMDB links to the most others (connected_to, from the LLDP
	// neighbours discovery saw), and those others.
	ipOf := map[string]string{}
	for _, mh := range m.Hosts {
		for _, n := range []string{mh.Name, mh.FQDN} {
			if n != "" {
				ipOf[strings.ToLower(n)] = mh.IP
			}
		}
	}
	var linked map[string][]string
	sw := ""
	// the relations come with the discovery's last payloads: wait for them
	eventually(t, 60*time.Second, func() error {
		linked, sw = map[string][]string{}, ""
		for _, n := range m.Neighbours {
			for _, ip := range []string{n.A, n.B} {
				if _, done := linked[ip]; done {
					continue
				}
				linked[ip] = []string{}
				var list cmdbapi.ListResponse
				h.mustAPI(t, "GET", "/api/v1/cis?search="+ip+"&limit=50", nil, &list)
				for _, ci := range list.Items {
					if ci.Class == "ip_address" || ci.Class == "network_adapter" || fmt.Sprint(ci.Attributes["ip_address"]) != ip {
						continue
					}
					var rel cmdbapi.RelResponse
					h.mustAPI(t, "GET", "/api/v1/cis/"+ci.ID+"/relations", nil, &rel)
					for _, r := range append(rel.Outgoing, rel.Incoming...) {
						if peer := ipOf[strings.ToLower(r.Peer.Name)]; r.Type == "connected_to" && peer != "" && !slices.Contains(linked[ip], peer) {
							linked[ip] = append(linked[ip], peer)
						}
					}
				}
				if len(linked[ip]) > len(linked[sw]) || (len(linked[ip]) == len(linked[sw]) && ip < sw) {
					sw = ip
				}
			}
		}
		if len(linked[sw]) < 2 {
			return fmt.Errorf("after discovery no device is connected_to two others in the CMDB (linked %v; manifest neighbours %+v)", linked, m.Neighbours)
		}
		return nil
	})
	neighbours := linked[sw]
	t.Logf("switch %s, connected to %v", sw, neighbours)
	send := func(node, typ, sev string) {
		h.mustAPI(t, "POST", "/api/v1/events", api.EventInput{Node: node, Type: typ, Severity: sev, Message: typ + " on " + node}, nil)
	}
	send(sw, "linkDown", "critical")
	for _, n := range neighbours {
		send(n, "ping", "major")
	}

	var group api.TopologyGroup
	defer func() {
		if !t.Failed() {
			return
		}
		var alerts api.AlertsListResponse
		h.mustAPI(t, "GET", "/api/v1/alerts?state=open", nil, &alerts)
		for _, a := range alerts.Items {
			var rel cmdbapi.RelResponse
			h.mustAPI(t, "GET", "/api/v1/cis/"+a.CI+"/relations", nil, &rel)
			var links []string
			for _, r := range append(rel.Outgoing, rel.Incoming...) {
				if r.Type != "contains" {
					links = append(links, r.Type+" "+r.Peer.Name)
				}
			}
			t.Logf("alert %s node %s ci %s %s (%s) relations %v", a.ID, a.Node, a.CI, a.CIClass, rel.CI.Name, links)
		}
	}()
	eventually(t, 60*time.Second, func() error {
		var out api.GroupsListResponse
		h.mustAPI(t, "GET", "/api/v1/alert-groups", nil, &out)
		if len(out.Items) != 1 {
			return fmt.Errorf("%d topology groups, want 1: %+v", len(out.Items), out.Items)
		}
		group = out.Items[0]
		if group.RootNode != sw || len(group.Alerts) != 1+len(neighbours) {
			return fmt.Errorf("group root %s with %d alerts, want the switch %s with %d", group.RootNode, len(group.Alerts), sw, 1+len(neighbours))
		}
		return nil
	})
	var alerts api.AlertsListResponse
	h.mustAPI(t, "GET", "/api/v1/alerts?state=open", nil, &alerts)
	rootAlert := ""
	for _, a := range alerts.Items {
		if a.Node == sw {
			rootAlert = a.ID
			if a.CI == "" || a.CI != group.RootCI {
				t.Errorf("switch alert bound to CI %q, the group's root CI is %q", a.CI, group.RootCI)
			}
		}
	}
	for _, a := range alerts.Items {
		if a.Node != sw && !slices.Contains(neighbours, a.Node) {
			continue
		}
		if a.TopologyGroup != group.ID || a.RootCause != rootAlert {
			t.Errorf("alert on %s: topology group %q root cause %q, want %q and the switch's %q", a.Node, a.TopologyGroup, a.RootCause, group.ID, rootAlert)
		}
	}

	// the CLI shows the group
	out, err := exec.Command(filepath.Join(binDir, "outpost"), "--server", "http://"+h.http, "--data", h.dir, "alerts", "groups", "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("outpost alerts groups: %v\n%s", err, out)
	}
	var cli api.GroupsListResponse
	if err := json.Unmarshal(out, &cli); err != nil || len(cli.Items) != 1 || cli.Items[0].RootCause != rootAlert {
		t.Errorf("outpost alerts groups -o json: %v %s", err, out)
	}

	// the switch's notification names its root cause and the alerts that follow from it
	eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range got {
			related, _ := n["related"].([]any)
			if n["root_cause"] == rootAlert && len(related) == len(neighbours) {
				return nil
			}
		}
		return fmt.Errorf("no notification with root cause %s and %d related alerts in %d notifications", rootAlert, len(neighbours), len(got))
	})

	// the console draws the group from a neighbour's alert page: the switch as the root
	// cause, every CI of the group, every link
	neighbourAlert := ""
	for _, a := range alerts.Items {
		if a.Node == neighbours[0] {
			neighbourAlert = a.ID
		}
	}
	tab := browser(t)
	ctx, cancel := context.WithTimeout(tab, 2*time.Minute)
	defer cancel()
	shots := artifacts(t)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+h.http+"/console/signin"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SetValue(chromedp.ID("token"), h.token(t)),
		chromedp.Click(chromedp.CSS(`form.signin button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(`nav.side`)),
		chromedp.Navigate("http://"+h.http+"/console/alerts/"+neighbourAlert), chromedp.WaitVisible(chromedp.ID("group-map"))); err != nil {
		screenshot(t, tab, shots, "topology-failed")
		t.Fatalf("alert page with its group: %v", err)
	}
	screenshot(t, tab, shots, "topology-group")
	drawn, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[document.querySelectorAll('#group-map g.sm-node').length,
		document.querySelectorAll('#group-map line.sm-edge').length,
		(document.querySelector('#group-map g[data-root="true"]') || {dataset: {}}).dataset.ci].join(" ")`))
	cis := len(group.CIs)
	if !slices.Contains(group.CIs, group.RootCI) {
		cis++
	}
	if want := fmt.Sprintf("%d %d %s", cis, len(group.Links), group.RootCI); err != nil || drawn != want {
		t.Errorf("group drawn as nodes/edges/root %q, want %q (%v)", drawn, want, err)
	}
}
