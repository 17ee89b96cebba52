package e2e

// The web console in a real headless Chromium against the real `outpost up --lab`: sign in
// with the admin token, start a discovery from the discovery page and watch it finish live
// (Server-Sent Events, no reload), find the lab's Linux servers in the CMDB and open one
// with its relations and neighbourhood drawing. Screenshots go to $OUTPOST_ARTIFACTS (or
// testdata/artifacts).

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

func TestConsoleInTheBrowser(t *testing.T) {
	dir := t.TempDir()
	h := &testHub{dir: dir, http: freeAddr(t), nats: freeAddr(t)}
	h.proc = start(t, "outpost", "up", "--lab", "--lab-range", "127.77.141.0/24", "--lab-hosts", "24", "--no-local-bridge",
		"--data", dir, "--http", h.http, "--nats", h.nats)
	eventually(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + h.http + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	base := "http://" + h.http
	ct := openConsole(t, 4*time.Minute, "failed")
	tab, ctx, shots := ct.tab, ct.ctx, ct.shots
	must, eval, text, location := ct.must, ct.eval, ct.text, ct.location

	// An unauthenticated visit lands on the sign-in form; a wrong token is refused.
	must("open the console", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	if u := location(); !strings.Contains(u, "/console/signin") {
		t.Fatalf("not sent to sign in: %s", u)
	}
	must("sign in with a wrong token", chromedp.SendKeys(chromedp.ID("token"), "opt_not-a-token"),
		chromedp.Click(chromedp.CSS(`form.signin button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(`form.signin .problem`)))
	if got := text(`form.signin .problem`); !strings.Contains(got, "unknown or revoked") {
		t.Fatalf("wrong token: %q", got)
	}
	must("sign in", chromedp.SetValue(chromedp.ID("token"), h.token(t)),
		chromedp.Click(chromedp.CSS(`form.signin button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(`nav.side`)))
	must("dashboard", chromedp.WaitVisible(chromedp.CSS(`.tiles`)))
	screenshot(t, tab, shots, "01-dashboard")

	// Start a discovery of the lab from the discovery page; the run page follows it live.
	must("discovery page", chromedp.Navigate(base+"/console/discovery"), chromedp.WaitVisible(chromedp.CSS(`select[name=site]`)))
	eventually(t, 30*time.Second, func() error {
		// the lab site appears once `outpost up --lab` created it
		if eval(`[...document.querySelectorAll('select[name=site] option')].filter(o => o.value === "lab").length`) == 1 {
			return nil
		}
		_ = chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`select[name=site]`)))
		return fmt.Errorf("site lab not offered yet")
	})
	must("start a run", chromedp.SetValue(chromedp.CSS(`select[name=site]`), "lab"),
		chromedp.Click(chromedp.CSS(`form[action="/console/discovery"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("run-state")))
	if u := location(); !strings.Contains(u, "/console/discovery/runs/") {
		t.Fatalf("not on the run page: %s", u)
	}
	// A marker on the window proves the page was not reloaded while it changed.
	eval(`window.outpostMarker = 1`)
	eventually(t, 2*time.Minute, func() error {
		if s := text(`#run-state`); s != "completed" {
			return fmt.Errorf("run state %q", s)
		}
		return nil
	})
	if eval(`window.outpostMarker || 0`) != 1 {
		t.Fatal("the run page reloaded: its state was not updated over Server-Sent Events")
	}
	if eval(`Number(document.querySelector('[data-counter=classified]').textContent)`) == 0 {
		t.Fatal("run completed with nothing classified on the page")
	}
	if eval(`document.querySelector('#run-progress').value`) != 100 {
		t.Fatal("progress bar not full at the end of the run")
	}
	screenshot(t, tab, shots, "02-run")

	// The CMDB list shows the lab's Linux servers.
	eventually(t, 60*time.Second, func() error {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/console/cis?class=linux_server"), chromedp.WaitVisible(chromedp.CSS(`table.cis`))); err != nil {
			return err
		}
		if n := eval(`document.querySelectorAll('table.cis tr[data-class=linux_server]').length`); n == 0 {
			return fmt.Errorf("no linux_server row yet")
		}
		return nil
	})
	screenshot(t, tab, shots, "03-cmdb")

	// A Linux server's page: attributes, relations and the neighbourhood drawn in SVG.
	must("open a server", chromedp.Click(chromedp.CSS(`table.cis tr[data-class=linux_server] a`)),
		chromedp.WaitVisible(chromedp.CSS(`svg.topology`)))
	if n := eval(`document.querySelectorAll('table.relations tbody tr a').length`); n == 0 {
		t.Fatal("the server shows no relation")
	}
	if n := eval(`document.querySelectorAll('svg.topology a.node').length`); n < 2 {
		t.Fatalf("neighbourhood drawing has %d nodes", n)
	}
	if n := eval(`document.querySelectorAll('svg.topology .edge-label').length`); n == 0 {
		t.Fatal("neighbourhood edges carry no relation label")
	}
	screenshot(t, tab, shots, "04-ci")

	// A neighbour in the drawing is a link to its own page.
	must("follow a neighbour", chromedp.Click(chromedp.CSS(`svg.topology a.node:not(.center)`)),
		chromedp.WaitVisible(chromedp.CSS(`.ci-head`)))

	must("agents page", chromedp.Navigate(base+"/console/agents"), chromedp.WaitVisible(chromedp.CSS(`table.agents`)))
	if got := text(`table.agents tbody`); !strings.Contains(got, "lab-bridge") {
		t.Fatalf("agents page without the lab bridge: %q", got)
	}
	screenshot(t, tab, shots, "05-agents")
	// An operator's action: pause, then resume, each confirmed on the page.
	must("pause the lab bridge", chromedp.Click(chromedp.CSS(`form[action$="/pause"] button`)), chromedp.WaitVisible(chromedp.CSS(`.flash`)))
	if got := text(`.flash`); !strings.Contains(got, "lab/lab-bridge paused") {
		t.Fatalf("pause: %q", got)
	}
	eventually(t, 30*time.Second, func() error {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/console/agents"), chromedp.WaitVisible(chromedp.CSS(`table.agents`))); err != nil {
			return err
		}
		if eval(`document.querySelectorAll('form[action$="/resume"]').length`) == 0 {
			return fmt.Errorf("the agent does not report paused yet")
		}
		return nil
	})
	must("resume the lab bridge", chromedp.Click(chromedp.CSS(`form[action$="/resume"] button`)), chromedp.WaitVisible(chromedp.CSS(`.flash`)))
	if got := text(`.flash`); !strings.Contains(got, "resumed") {
		t.Fatalf("resume: %q", got)
	}

	must("sites page", chromedp.Navigate(base+"/console/sites"), chromedp.WaitVisible(chromedp.CSS(`details.form-box`)))
	screenshot(t, tab, shots, "06-sites")
	must("dead letters page", chromedp.Navigate(base+"/console/dlq"), chromedp.WaitVisible(chromedp.CSS(`.tiles`)))
	screenshot(t, tab, shots, "07-dlq")
}
