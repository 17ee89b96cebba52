package e2e

// The console's import pages in a real headless Chromium against a real `outpost up`: an
// import of a large CSV is followed live on its run page (Server-Sent Events, no reload) to
// its counters per outcome, its error row is found with the outcome filter, and the
// imports page lists the run with its counters and the stored map.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

func TestConsoleImportRunsInTheBrowser(t *testing.T) {
	h := startHub(t, t.TempDir())
	dir := t.TempDir()
	const n = 60000
	mapPath, csvPath := filepath.Join(dir, "map.yaml"), filepath.Join(dir, "servers.csv")
	if err := os.WriteFile(mapPath, []byte(importMap), 0o600); err != nil {
		t.Fatal(err)
	}
	writeCSV(t, csvPath, importRecords(n), "bad-1;BADSN1;lots;Debian 12\r\n")
	if _, err := h.outpost(t, "import", "maps", "add", mapPath); err != nil {
		t.Fatal(err)
	}

	base := "http://" + h.http
	ct := openConsole(t, 4*time.Minute, "imports-failed")
	tab, shots := ct.tab, ct.shots
	must, eval, text := ct.must, ct.eval, ct.text
	must("sign in", chromedp.Navigate(base+"/console/signin"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SetValue(chromedp.ID("token"), h.token(t)),
		chromedp.Click(chromedp.CSS(`form.signin button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(`nav.side`)))

	// The run starts once the browser is signed in, so that its page opens while it works
	// (the importer stages and transforms in one process now: a run of this size takes a few
	// seconds, less than starting a browser on a loaded machine).
	out, err := h.outpost(t, "import", "run", "--file", csvPath, "--map", mapPath, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var run api.Run
	if err := json.Unmarshal(out, &run); err != nil {
		t.Fatal(err)
	}

	// The run page while the run works: it subscribes to the run's events.
	must("run page", chromedp.Navigate(base+"/console/imports/runs/"+run.ID), chromedp.WaitVisible(chromedp.ID("run-state")))
	live := eval(`document.querySelector('#run[data-events]') ? 1 : 0`) == 1
	eval(`window.outpostMarker = 1`)
	eventually(t, 3*time.Minute, func() error {
		if s := text(`#run-state`); s != api.StateCompleted {
			return fmt.Errorf("run state %q, inserted %s", s, text(`[data-counter=inserted]`))
		}
		return nil
	})
	if live {
		if eval(`window.outpostMarker || 0`) != 1 {
			t.Fatal("the run page reloaded: its counters were not updated over Server-Sent Events")
		}
		if eval(`document.querySelector('#run-progress').value`) != 100 {
			t.Fatal("progress bar not full at the end of the run")
		}
	} else {
		t.Errorf("the run of %d rows had finished before its page opened: its live progress was not exercised", n)
	}
	for counter, want := range map[string]int{"staged": n + 1, "inserted": n, "error": 1, "unchanged": 0} {
		if got := eval(`Number(document.querySelector('[data-counter=` + counter + `]').textContent)`); got != want {
			t.Errorf("counter %s = %d, want %d", counter, got, want)
		}
	}
	screenshot(t, tab, shots, "imports-01-run")

	// Rows filtered by outcome: the error row with its line and reason.
	// A filter link loads another page: the table of the page being left can still match,
	// so the rows are read (without failing on a node the navigation detached) until the
	// filtered page shows them.
	must("error rows", chromedp.Click(chromedp.CSS(`nav.filters a[data-outcome=error]`)), chromedp.WaitVisible(chromedp.CSS(`table.rows`)))
	eventually(t, 30*time.Second, func() error {
		row, err := ct.textNow(`table.rows tbody tr[data-outcome=error]`)
		if err != nil || !strings.Contains(row, fmt.Sprintf("line %d", n+2)) || !strings.Contains(row, "fields.ram_mb") {
			return fmt.Errorf("error row: %q (%v)", row, err)
		}
		return nil
	})
	if got := eval(`document.querySelectorAll('table.rows tbody tr[data-outcome]').length`); got != 1 {
		t.Fatalf("%d rows under the error filter, want 1", got)
	}
	must("inserted rows", chromedp.Click(chromedp.CSS(`nav.filters a[data-outcome=inserted]`)), chromedp.WaitVisible(chromedp.CSS(`table.rows`)))
	eventually(t, 30*time.Second, func() error {
		if s, err := ct.textNow(`table.rows tbody tr[data-outcome=inserted]`); err != nil || s == "" {
			return fmt.Errorf("no inserted row shown yet (%v)", err)
		}
		return nil
	})
	if got := eval(`document.querySelectorAll('table.rows tbody tr[data-outcome=inserted]').length`); got != 100 {
		t.Fatalf("%d inserted rows on the first page, want 100", got)
	}
	if eval(`document.querySelectorAll('table.rows tbody tr:not([data-outcome=inserted])').length`) != 0 || eval(`document.querySelectorAll('a[rel=next]').length`) != 1 {
		t.Fatal("the inserted filter shows other rows, or no next page")
	}
	screenshot(t, tab, shots, "imports-02-rows")

	// The imports page: the run with its counters, the stored map.
	must("imports page", chromedp.Navigate(base+"/console/imports"), chromedp.WaitVisible(chromedp.CSS(`table.imports`)))
	if row := text(`table.imports tr[data-run="` + run.ID + `"]`); !strings.Contains(row, "completed") || !strings.Contains(row, fmt.Sprint(n)) {
		t.Fatalf("imports page row: %q", row)
	}
	if maps := text(`table.maps tbody`); !strings.Contains(maps, "e2e-servers") || !strings.Contains(maps, "v1") {
		t.Fatalf("stored maps: %q", maps)
	}
	screenshot(t, tab, shots, "imports-03-list")
}
