package e2e

// The console's Service Mapping pages in a real headless Chromium against a real `outpost
// up` and bridge: a lab service mapped through the bridge is listed, and its page draws the
// map as SVG — every node and edge of the map, the dead backend dashed — with the health of
// a node whose host has an open critical alert from correlation.

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-dev/outpost/libs/lab"
)

func TestConsoleServiceMapInTheBrowser(t *testing.T) {
	const cidr = "127.77.183.0/24"
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 80, Seed: 7})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	defer l.Close()
	m := l.Manifest()
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "sm", cidr, true)
	startBridge(t, h, "sm", "br1", tok)
	h.waitStatus(t, "br1", "up")
	for _, lc := range m.StoreCredentials("sm") {
		h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": lc.Name, "type": lc.Type, "site": "sm",
			"username": lc.Username, "secret": lc.Secret, "fields": lc.Fields}, nil)
	}
	s := m.AppServices[0] // the one with a dead backend
	h.mustAPI(t, "POST", "/api/v1/services", map[string]any{"name": s.Name, "entry": s.Entry}, nil)
	d := h.mapService(t, s.Name, false)
	// a critical alert on the application server's host (correlation binds it by address)
	appIP, _, _ := net.SplitHostPort(s.Edges[1].From)
	h.mustAPI(t, "POST", "/api/v1/events", map[string]any{"node": appIP, "type": "disk", "resource": "/var", "severity": "critical",
		"message": "filesystem /var 98% full"}, nil)

	base := "http://" + h.http
	ct := openConsole(t, 3*time.Minute, "services-failed")
	tab, ctx, shots := ct.tab, ct.ctx, ct.shots
	must, eval := ct.must, ct.eval
	must("sign in", chromedp.Navigate(base+"/console/signin"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SetValue(chromedp.ID("token"), h.token(t)),
		chromedp.Click(chromedp.CSS(`form.signin button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(`nav.side`)))

	must("services page", chromedp.Navigate(base+"/console/services"), chromedp.WaitVisible(chromedp.CSS(`table.services`)))
	row, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`table.services tr[data-service="`+s.Name+`"]`)))
	if err != nil || !strings.Contains(row, "mapped") || !strings.Contains(row, s.Entry) {
		t.Fatalf("services page row of %s: %q %v", s.Name, row, err)
	}
	screenshot(t, tab, shots, "services-01-list")

	must("service page", chromedp.Click(chromedp.CSS(`table.services a[href$="/services/`+s.Name+`"]`)), chromedp.WaitVisible(chromedp.ID("service-map")))
	if got := eval(`document.querySelectorAll('#service-map g.sm-node').length`); got != len(d.Map.Nodes) {
		t.Errorf("%d nodes drawn, the map has %d", got, len(d.Map.Nodes))
	}
	if got := eval(`document.querySelectorAll('#service-map line.sm-edge').length`); got != len(d.Map.Edges) {
		t.Errorf("%d edges drawn, the map has %d", got, len(d.Map.Edges))
	}
	for _, e := range s.Edges {
		sel := fmt.Sprintf(`#service-map line.sm-edge[data-from="%s"][data-to="%s"]%s`, e.From, e.To, map[bool]string{true: ".sm-dead"}[e.Dead])
		if eval(`document.querySelectorAll('`+sel+`').length`) != 1 {
			t.Errorf("manifest edge %s → %s (dead %v) not drawn as such (%s)", e.From, e.To, e.Dead, sel)
		}
	}
	if eval(`document.querySelectorAll('#service-map g.sm-node.sm-unreachable').length`) != 1 {
		t.Error("the dead backend is not drawn as unreachable")
	}
	// health: the alert is correlated asynchronously; the page shows it once it exists
	eventually(t, 60*time.Second, func() error {
		must("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("service-map")))
		if eval(`document.querySelectorAll('#service-map g.sm-node[data-id="`+s.Edges[1].From+`"][data-health=critical]').length`) != 1 {
			return fmt.Errorf("the application server %s has no critical health on the map", s.Edges[1].From)
		}
		return nil
	})
	if eval(`document.querySelectorAll('#service-map g.sm-node[data-health]').length`) != 1 {
		t.Error("health shown on nodes without an alert")
	}
	screenshot(t, tab, shots, "services-02-map")
}
