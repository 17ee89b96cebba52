package e2e

// The console's alert pages in a real headless Chromium against `outpost up`: the alert
// list, filtered by state and severity, follows new alerts live (Server-Sent Events, no
// reload); an alert's page shows its event count, first and last seen and group, and an
// operator acknowledges it there; silences are added and removed from their page, and the
// silenced alert says so; a viewer is offered neither the form nor the buttons.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
)

func TestConsoleAlertPages(t *testing.T) {
	h := startHub(t, t.TempDir())
	send := func(node, typ, sev string) {
		h.mustAPI(t, "POST", "/api/v1/events", api.EventInput{Node: node, Type: typ, Severity: sev, Message: typ + " on " + node}, nil)
	}
	for range 3 {
		send("web-1", "http_down", "critical")
	}
	send("db-1", "disk_full", "minor")
	var web api.Alert
	eventually(t, 30*time.Second, func() error {
		var l api.AlertsListResponse
		h.mustAPI(t, "GET", "/api/v1/alerts?state=open", nil, &l)
		for _, a := range l.Items {
			if a.Node == "web-1" && a.Count == 3 {
				web = a
			}
		}
		if len(l.Items) != 2 || web.ID == "" {
			return fmt.Errorf("%d open alerts (want 2, web-1's with count 3): %+v", len(l.Items), l.Items)
		}
		return nil
	})
	var viewer gatewayapi.TokenCreated
	h.mustAPI(t, "POST", "/api/v1/tokens", gatewayapi.TokenCreateRequest{Name: "watcher", Role: "viewer"}, &viewer)

	base := "http://" + h.http
	ct := openConsole(t, 3*time.Minute, "alerts-failed")
	tab, shots := ct.tab, ct.shots
	must, eval, text := ct.must, ct.eval, ct.text
	waitFor := func(what, expr string) {
		t.Helper()
		eventually(t, 30*time.Second, func() error {
			if eval(expr) != 1 {
				return fmt.Errorf("%s: not yet (%s)", what, expr)
			}
			return nil
		})
	}
	signIn := func(token string) {
		t.Helper()
		must("sign in", chromedp.Navigate(base+"/console/signin"), chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.SetValue(chromedp.ID("token"), token),
			chromedp.Click(chromedp.CSS(`form.signin button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(`nav.side`)))
	}
	signIn(h.token(t))

	// the list, open alerts of every severity; then live: a new alert shows up without a reload
	must("alerts page", chromedp.Navigate(base+"/console/alerts?state=open"), chromedp.WaitVisible(chromedp.ID("alerts")),
		chromedp.WaitVisible(chromedp.ID("alerts-live")))
	if n := eval(`document.querySelectorAll('#alerts tbody tr').length`); n != 2 {
		t.Fatalf("%d alerts listed, want 2", n)
	}
	if got := text(`#alerts tr[data-id="` + web.ID + `"] td.count`); got != "3" {
		t.Fatalf("web-1's count on the list: %q", got)
	}
	screenshot(t, tab, shots, "alerts-01-list")
	eval(`window.__noReload = 1`) // a marker: gone if the page reloads
	send("app-1", "queue_full", "major")
	waitFor("the new alert on the list", `document.querySelectorAll('#alerts tbody tr').length === 3 && window.__noReload === 1 ? 1 : 0`)
	screenshot(t, tab, shots, "alerts-02-live")

	// severity filter
	must("filter critical", chromedp.Navigate(base+"/console/alerts?state=open&severity=critical"), chromedp.WaitVisible(chromedp.ID("alerts")))
	if got := eval(`[...document.querySelectorAll('#alerts tbody tr')].filter(r => r.dataset.severity === "critical").length * 10 + document.querySelectorAll('#alerts tbody tr').length`); got != 11 {
		t.Fatalf("severity=critical lists %d critical of %d rows (encoded %d), want the one", got/10, got%10, got)
	}
	must("filter closed", chromedp.Navigate(base+"/console/alerts?state=closed"), chromedp.WaitVisible(chromedp.ID("alerts-none")))

	// the alert's page: count, first/last seen, group; acknowledged from the page
	must("alert page", chromedp.Navigate(base+"/console/alerts/"+web.ID), chromedp.WaitVisible(chromedp.ID("alert-facts")))
	if got := text(`#alert-count`); got != "3" {
		t.Fatalf("alert page count %q", got)
	}
	for _, sel := range []string{`#alert-first`, `#alert-last`} {
		if got := text(sel); !strings.Contains(got, web.FirstSeen.UTC().Format("2006-01-02")) {
			t.Errorf("%s: %q", sel, got)
		}
	}
	if got := text(`#alert-group`); web.Group != "" && !strings.Contains(got, web.Group) {
		t.Errorf("group %q, the API says %q", got, web.Group)
	}
	screenshot(t, tab, shots, "alerts-03-detail")
	must("acknowledge", chromedp.Click(chromedp.ID("alert-ack")), chromedp.WaitVisible(chromedp.CSS(`p.flash`)))
	if got := text(`#alert-state`); got != api.StateAcknowledged {
		t.Fatalf("after acknowledging the page says %q", got)
	}

	// silences: a bad match is refused with its reason; a good one is listed and mutes web-1
	must("silences page", chromedp.Navigate(base+"/console/silences"), chromedp.WaitVisible(chromedp.ID("silence-add")))
	must("bad silence", chromedp.SetValue(chromedp.CSS(`#silence-add input[name=match]`), "web-1"),
		chromedp.SetValue(chromedp.CSS(`#silence-add input[name=for]`), "1h"),
		chromedp.Click(chromedp.CSS(`#silence-add button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(`div.problem`)))
	if got := text(`div.problem`); !strings.Contains(got, "not key=value") {
		t.Fatalf("bad match: %q", got)
	}
	must("add silence", chromedp.SetValue(chromedp.CSS(`#silence-add input[name=match]`), "node=web-1"),
		chromedp.SetValue(chromedp.CSS(`#silence-add input[name=for]`), "1h"),
		chromedp.SetValue(chromedp.CSS(`#silence-add input[name=comment]`), "patching"),
		chromedp.Click(chromedp.CSS(`#silence-add button[type=submit]`)), chromedp.WaitVisible(chromedp.ID("silences")))
	if got := text(`#silences tbody`); !strings.Contains(got, "node=web-1") || !strings.Contains(got, "active") || !strings.Contains(got, "patching") {
		t.Fatalf("silences after adding: %q", got)
	}
	screenshot(t, tab, shots, "alerts-04-silences")
	must("silenced alert", chromedp.Navigate(base+"/console/alerts/"+web.ID), chromedp.WaitVisible(chromedp.ID("alert-silenced")))

	// a viewer sees the silence and the alert, and no form or button to change them
	signIn(viewer.Token)
	must("viewer silences", chromedp.Navigate(base+"/console/silences"), chromedp.WaitVisible(chromedp.ID("silences")))
	if n := eval(`document.querySelectorAll('#silence-add, #silences form').length`); n != 0 {
		t.Fatalf("a viewer is offered %d silence forms", n)
	}
	must("viewer alert", chromedp.Navigate(base+"/console/alerts/"+web.ID), chromedp.WaitVisible(chromedp.ID("alert-facts")))
	if n := eval(`document.querySelectorAll('#alert-ack, #alert-close').length`); n != 0 {
		t.Fatalf("a viewer is offered %d alert buttons", n)
	}

	// the operator removes the silence
	signIn(h.token(t))
	must("silences again", chromedp.Navigate(base+"/console/silences"), chromedp.WaitVisible(chromedp.ID("silences")))
	eval(`(window.confirm = () => true, 1)`)
	must("remove silence", chromedp.Click(chromedp.CSS(`#silences form button`)), chromedp.WaitVisible(chromedp.CSS(`p.flash`)))
	if n := eval(`document.querySelectorAll('#silences tbody tr').length`); n != 0 {
		t.Fatalf("%d silences left after removing the only one", n)
	}
}
