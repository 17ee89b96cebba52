package console

import (
	"encoding/json"
	"net/http"
	"net/url"

	importerapi "github.com/outpost-dev/outpost/libs/api/importer"
)

// --- imports ---

type importsData struct {
	Runs         []importEvent
	Maps         []importerapi.StoredMap
	Schedules    []importerapi.Schedule
	Cursor, Next string
}

// imports lists runs with their counters per outcome, stored maps and schedules.
func (c *Console) imports(w http.ResponseWriter, r *http.Request) {
	var (
		f  fetches
		rl importerapi.RunsResponse
		ml importerapi.MapsResponse
		sl importerapi.SchedulesResponse
	)
	cursor := r.URL.Query().Get("cursor")
	f.get(c, r, "/api/v1/imports/runs"+query("limit", "50", "cursor", cursor), &rl)
	f.get(c, r, "/api/v1/imports/maps?limit=200", &ml)
	f.get(c, r, "/api/v1/imports/schedules?limit=200", &sl)
	errs := f.wait()
	runs := make([]importEvent, len(rl.Runs))
	for i, x := range rl.Runs {
		runs[i] = importEvent{Run: x, Progress: importProgress(x), Final: importerapi.Terminal(x.State)}
	}
	d := importsData{Runs: runs, Maps: ml.Maps, Schedules: sl.Schedules, Cursor: cursor, Next: rl.NextCursor}
	c.show(w, r, http.StatusOK, "imports", &page{Title: "Imports", Nav: "imports", Data: d}, errs...)
}

type importRunData struct {
	Run      importerapi.Run
	Progress int
	Final    bool
	Outcomes []string
	Outcome  string // the rows shown: one outcome, or "" for all
	Rows     []importerapi.RowResult
	Cursor   string
	Next     string
}

// importProgress is the share of staged rows with an outcome; while the source is still
// read the total grows, so it stays below 100 until staging is done.
func importProgress(r importerapi.Run) int {
	if r.Counters.Staged == 0 {
		if importerapi.Terminal(r.State) {
			return 100
		}
		return 0
	}
	p := int(r.Counters.Done() * 100 / r.Counters.Staged)
	if !r.StagingDone || !importerapi.Terminal(r.State) {
		p = min(p, 99)
	}
	return p
}

// importRun shows a run: live counters (Server-Sent Events while it runs) and its rows,
// filtered by outcome, paged.
func (c *Console) importRun(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	outcome, cursor := q.Get("outcome"), q.Get("cursor")
	var (
		f    fetches
		run  importerapi.Run
		rows importerapi.RowsResponse
	)
	base := "/api/v1/imports/runs/" + url.PathEscape(id)
	f.get(c, r, base, &run)
	f.get(c, r, base+"/rows"+query("outcome", outcome, "cursor", cursor, "limit", "100"), &rows)
	errs := f.wait()
	status := http.StatusOK
	if len(errs) > 0 && run.ID == "" {
		status = statusOf(errs[0])
	}
	title := "Import run"
	if run.ID != "" {
		title = "Import run " + run.ID
	}
	d := importRunData{Run: run, Progress: importProgress(run), Final: importerapi.Terminal(run.State), Outcomes: importerapi.Outcomes,
		Outcome: outcome, Rows: rows.Rows, Cursor: cursor, Next: rows.NextCursor}
	c.show(w, r, status, "import_run", &page{Title: title, Nav: "imports", Data: d}, errs...)
}

// importEvent is what the live import run page receives: the run and its progress.
type importEvent struct {
	importerapi.Run
	Progress int  `json:"progress"`
	Final    bool `json:"final"`
}

// importRunEvents streams an import run's progress as Server-Sent Events, like the discovery
// run's: "run" when it changed, "end" once it is final.
func (c *Console) importRunEvents(w http.ResponseWriter, r *http.Request) {
	path := "/api/v1/imports/runs/" + url.PathEscape(r.PathValue("id"))
	c.stream(w, r, "run", true, func() ([]byte, bool, error) {
		var rv importerapi.Run
		if err := c.call(r, http.MethodGet, path, nil, &rv); err != nil {
			return nil, false, err
		}
		final := importerapi.Terminal(rv.State)
		b, err := json.Marshal(importEvent{Run: rv, Progress: importProgress(rv), Final: final})
		return b, final, err
	})
}
