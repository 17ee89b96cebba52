package console

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// --- alerts, their topology groups, silences (correlation) ---

// alertStates are the states an alert list may be filtered by.
var alertStates = []string{api.StateOpen, api.StateAcknowledged, api.StateClosed}

// alertsPage is the most alerts one list page shows: the API's page size limit.
const alertsPage = 500

type alertsData struct {
	Alerts          []api.Alert
	State, Severity string
	Cursor, Next    string
	States, Sevs    []string
	// Live is the list's SSE stream (the page swaps its table when the list changes).
	Live string
}

// alertFilter reads the list's filters; a value the API would refuse is dropped with an
// error on the page rather than sent.
func alertFilter(r *http.Request) (state, severity string, err error) {
	q := r.URL.Query()
	state, severity = q.Get("state"), q.Get("severity")
	if state != "" && !slices.Contains(alertStates, state) {
		err = fmt.Errorf("state %q is not one of %s: showing every state", state, strings.Join(alertStates, ", "))
		state = ""
	}
	if severity != "" && api.Rank(severity) == 0 {
		err = errors.Join(err, fmt.Errorf("severity %q is not one of %s: showing every severity", severity, strings.Join(api.Severities, ", ")))
		severity = ""
	}
	return state, severity, err
}

// listAlerts is one page of the filtered list. The API filters by state; the severity filter
// is applied here, to the page the API returned (a page of 500 alerts).
func (c *Console) listAlerts(r *http.Request, state, severity, cursor string) (api.AlertsListResponse, error) {
	var l api.AlertsListResponse
	err := c.call(r, http.MethodGet, "/api/v1/alerts"+query("state", state, "cursor", cursor, "limit", fmt.Sprint(alertsPage)), nil, &l)
	if severity != "" {
		l.Items = slices.DeleteFunc(l.Items, func(a api.Alert) bool { return a.Severity != severity })
	}
	return l, err
}

// alerts lists alerts, newest first, filtered by state and severity; the table follows the
// list live (Server-Sent Events from alertsEvents).
func (c *Console) alerts(w http.ResponseWriter, r *http.Request) {
	state, severity, ferr := alertFilter(r)
	cursor := r.URL.Query().Get("cursor")
	l, err := c.listAlerts(r, state, severity, cursor)
	d := alertsData{Alerts: l.Items, State: state, Severity: severity, Cursor: cursor, Next: l.NextCursor,
		States: alertStates, Sevs: api.Severities}
	if cursor == "" { // only the first page follows the list: later pages would jump under the reader
		d.Live = Prefix + "/alerts/events" + query("state", state, "severity", severity)
	}
	c.show(w, r, http.StatusOK, "alerts", &page{Title: "Alerts", Nav: "alerts", Data: d}, ferr, err)
}

// alertsEvents streams "event: alerts" whenever the filtered list's first page changed
// (its digest: ids, states, counts, severities); the page then fetches its own HTML again
// and swaps the table — rendering stays on the server, as for the workflow runs.
func (c *Console) alertsEvents(w http.ResponseWriter, r *http.Request) {
	state, severity, _ := alertFilter(r)
	// the first answer is what the page shows: only changes are sent
	c.stream(w, r, "alerts", false, func() ([]byte, bool, error) {
		l, err := c.listAlerts(r, state, severity, "")
		if err != nil {
			return nil, false, err
		}
		sum := sha256.New()
		for _, a := range l.Items {
			fmt.Fprintf(sum, "%s|%s|%s|%d|%d|%s|%v\n", a.ID, a.State, a.Severity, a.Count, a.LastSeen.UnixNano(), a.TopologyGroup, a.SilencedBy)
		}
		b, err := json.Marshal(map[string]any{"digest": hex.EncodeToString(sum.Sum(nil)), "alerts": len(l.Items)})
		return b, false, err
	})
}

type alertData struct {
	Alert api.Alert
	// Group is the alert's topology group (nil: none), with its drawing and the alerts
	// of its CIs by CI.
	Group   *api.TopologyGroup
	Drawing groupDrawing
	Members []api.Alert
}

func (c *Console) loadAlert(r *http.Request, id string) (alertData, []error) {
	var (
		a   api.Alert
		d   alertData
		err error
	)
	if err = c.call(r, http.MethodGet, "/api/v1/alerts/"+url.PathEscape(id), nil, &a); err != nil {
		return d, []error{err}
	}
	d.Alert = a
	if a.TopologyGroup == "" {
		return d, nil
	}
	var (
		f      fetches
		groups api.GroupsListResponse
		open   api.AlertsListResponse
	)
	f.get(c, r, "/api/v1/alert-groups?limit=500", &groups)
	f.get(c, r, fmt.Sprintf("/api/v1/alerts?state=open&limit=%d", alertsPage), &open)
	errs := f.wait()
	for i := range groups.Items {
		if groups.Items[i].ID == a.TopologyGroup {
			d.Group = &groups.Items[i]
		}
	}
	if d.Group == nil {
		return d, errs
	}
	in := map[string]bool{}
	for _, id := range d.Group.Alerts {
		in[id] = true
	}
	for _, m := range append(open.Items, a) {
		if in[m.ID] && !slices.ContainsFunc(d.Members, func(x api.Alert) bool { return x.ID == m.ID }) {
			d.Members = append(d.Members, m)
		}
	}
	slices.SortFunc(d.Members, func(x, y api.Alert) int {
		return cmp.Or(cmp.Compare(api.Rank(y.Severity), api.Rank(x.Severity)), cmp.Compare(x.Node, y.Node))
	})
	d.Drawing = drawGroup(*d.Group, d.Members, a.CI)
	return d, errs
}

// alert shows one alert: its counts and times, its aggregation group, its topology group
// drawn with the root cause on the left, and ack/close for operators.
func (c *Console) alert(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, errs := c.loadAlert(r, id)
	status := http.StatusOK
	if d.Alert.ID == "" && len(errs) > 0 {
		status = statusOf(errs[0])
	}
	c.show(w, r, status, "alert", &page{Title: "Alert " + id, Nav: "alerts", Data: d}, errs...)
}

// alertAction acknowledges or closes an alert.
func (c *Console) alertAction(w http.ResponseWriter, r *http.Request) {
	id, action := r.PathValue("id"), r.PathValue("action")
	if action != "ack" && action != "close" {
		c.render(w, r, http.StatusNotFound, "error", &page{Title: "Not found", Errors: []string{"An alert can be acknowledged (ack) or closed (close), not " + action + "."}})
		return
	}
	if err := c.call(r, http.MethodPost, "/api/v1/alerts/"+url.PathEscape(id)+"/"+action, nil, nil); err != nil {
		d, errs := c.loadAlert(r, id)
		c.show(w, r, statusOf(err), "alert", &page{Title: "Alert " + id, Nav: "alerts", Data: d}, append([]error{err}, errs...)...)
		return
	}
	msg := "Alert acknowledged."
	if action == "close" {
		msg = "Alert closed."
	}
	done(w, r, Prefix+"/alerts/"+url.PathEscape(id), msg)
}

// groupDrawing is a topology group placed for SVG: the root cause in the first column, each
// CI one column further than its nearest link to the root.
type groupDrawing struct {
	W, H  float64
	Nodes []groupNode
	Edges []groupEdge
}

type groupNode struct {
	CI, Title, Severity, Alert string
	Root, Current              bool
	X, Y, W, H                 float64
}

type groupEdge struct {
	api.TopologyLink
	X1, Y1, X2, Y2 float64
}

// drawGroup lays a group out by hops from its root cause over its links (either way: a
// host runs_on the switch's neighbour, the switch contains the port); the nodes carry the
// node name and worst severity of the group's alerts on them.
func drawGroup(g api.TopologyGroup, alerts []api.Alert, current string) groupDrawing {
	adj := map[string][]string{}
	for _, l := range g.Links {
		adj[l.From] = append(adj[l.From], l.To)
		adj[l.To] = append(adj[l.To], l.From)
	}
	depth := map[string]int{g.RootCI: 0}
	queue := []string{g.RootCI}
	for len(queue) > 0 {
		ci := queue[0]
		queue = queue[1:]
		next := slices.Clone(adj[ci])
		slices.Sort(next)
		for _, n := range next {
			if _, ok := depth[n]; !ok {
				depth[n] = depth[ci] + 1
				queue = append(queue, n)
			}
		}
	}
	cis := slices.Clone(g.CIs)
	if !slices.Contains(cis, g.RootCI) && g.RootCI != "" {
		cis = append(cis, g.RootCI)
	}
	maxDepth := 0
	for _, ci := range cis {
		if _, ok := depth[ci]; !ok { // not linked (yet): after the others
			depth[ci] = -1
		}
		maxDepth = max(maxDepth, depth[ci])
	}
	for _, ci := range cis {
		if depth[ci] < 0 {
			depth[ci] = maxDepth + 1
		}
	}
	on := map[string]api.Alert{} // CI → its worst alert in the group
	for _, a := range alerts {
		if b, ok := on[a.CI]; !ok || api.Rank(a.Severity) > api.Rank(b.Severity) {
			on[a.CI] = a
		}
	}
	cols := map[int][]string{}
	last := 0
	for _, ci := range cis {
		cols[depth[ci]] = append(cols[depth[ci]], ci)
		last = max(last, depth[ci])
	}
	var out groupDrawing
	pos := map[string]*groupNode{}
	rows := 0
	for d := 0; d <= last; d++ {
		col := cols[d]
		slices.Sort(col)
		rows = max(rows, len(col))
		for i, ci := range col {
			a := on[ci]
			title := cmp.Or(a.Node, ci)
			if ci == g.RootCI && g.RootNode != "" {
				title = g.RootNode
			}
			out.Nodes = append(out.Nodes, groupNode{CI: ci, Title: title, Severity: a.Severity, Alert: a.ID, Root: ci == g.RootCI,
				Current: ci == current && current != "", X: smPad + float64(d)*(smBoxW+smColGap), Y: smPad + float64(i)*(smBoxH+smRowGap), W: smBoxW, H: smBoxH})
		}
	}
	for i := range out.Nodes {
		pos[out.Nodes[i].CI] = &out.Nodes[i]
	}
	for _, l := range g.Links {
		a, b := pos[l.From], pos[l.To]
		if a == nil || b == nil {
			continue
		}
		if b.X < a.X { // draw from the root's side outwards
			a, b = b, a
		}
		e := groupEdge{TopologyLink: l, X1: a.X + a.W, Y1: a.Y + a.H/2, X2: b.X, Y2: b.Y + b.H/2}
		if b.X == a.X { // same column: side by side vertically
			e.X1, e.Y1, e.X2, e.Y2 = a.X+a.W/2, a.Y+a.H, b.X+b.W/2, b.Y
		}
		out.Edges = append(out.Edges, e)
	}
	out.W = 2*smPad + float64(last+1)*smBoxW + float64(last)*smColGap
	out.H = 2*smPad + float64(max(rows, 1))*smBoxH + float64(max(rows-1, 0))*smRowGap
	return out
}

type silencesData struct {
	Silences     []api.Silence
	Cursor, Next string
	Form         url.Values
	// Now tells the active silences from the ended ones.
	Now time.Time
}

func (c *Console) silencesPage(w http.ResponseWriter, r *http.Request, status int, form url.Values, errs ...error) {
	cursor := r.URL.Query().Get("cursor")
	var l api.SilencesListResponse
	err := c.call(r, http.MethodGet, "/api/v1/silences"+query("cursor", cursor, "limit", "500"), nil, &l)
	c.show(w, r, status, "silences", &page{Title: "Silences", Nav: "silences",
		Data: silencesData{Silences: l.Items, Cursor: cursor, Next: l.NextCursor, Form: form, Now: time.Now()}}, append(errs, err)...)
}

// silences lists the silences (active and ended, as the API keeps them) with a form to add one.
func (c *Console) silences(w http.ResponseWriter, r *http.Request) {
	c.silencesPage(w, r, http.StatusOK, nil)
}

// silenceAdd adds a silence: match is one k=v per line or comma-separated, for a duration.
func (c *Console) silenceAdd(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	form := r.PostForm
	req := api.SilenceAddRequest{Match: map[string]string{}, For: strings.TrimSpace(form.Get("for")), Comment: strings.TrimSpace(form.Get("comment"))}
	var bad []error
	for _, kv := range strings.FieldsFunc(form.Get("match"), func(r rune) bool { return r == '\n' || r == ',' }) {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			bad = append(bad, fmt.Errorf("match %q is not key=value (e.g. node=web-1)", kv))
			continue
		}
		req.Match[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if len(bad) > 0 {
		c.silencesPage(w, r, http.StatusBadRequest, form, bad...)
		return
	}
	var s api.Silence
	if err := c.call(r, http.MethodPost, "/api/v1/silences", req, &s); err != nil {
		c.silencesPage(w, r, statusOf(err), form, err)
		return
	}
	done(w, r, Prefix+"/silences", "Silence "+s.ID+" added until "+s.EndsAt.UTC().Format(time.DateTime)+" UTC.")
}

func (c *Console) silenceRemove(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := c.call(r, http.MethodDelete, "/api/v1/silences/"+url.PathEscape(id), nil, nil); err != nil {
		c.silencesPage(w, r, statusOf(err), nil, err)
		return
	}
	done(w, r, Prefix+"/silences", "Silence "+id+" removed.")
}
