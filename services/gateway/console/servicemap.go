package console

import (
	"cmp"
	"net/http"
	"net/url"
	"slices"
	"strings"

	correlationapi "github.com/outpost-dev/outpost/libs/api/correlation"
	mappingapi "github.com/outpost-dev/outpost/libs/api/mapping"
)

// --- application services (Service Mapping) ---

type servicesData struct {
	Services     []mappingapi.AppService
	Cursor, Next string
}

// services lists the application services with the state of their maps.
func (c *Console) services(w http.ResponseWriter, r *http.Request) {
	var (
		f  fetches
		sl mappingapi.ListReply
	)
	cursor := r.URL.Query().Get("cursor")
	f.get(c, r, "/api/v1/services"+query("limit", "100", "cursor", cursor), &sl)
	errs := f.wait()
	c.show(w, r, http.StatusOK, "services", &page{Title: "Application services", Nav: "services",
		Data: servicesData{Services: sl.Services, Cursor: cursor, Next: sl.NextCursor}}, errs...)
}

type serviceData struct {
	Detail mappingapi.Detail
	Map    svcMap
	// Alerts are the open alerts on the map's CIs, worst first.
	Alerts []correlationapi.Alert
}

// service shows one application service's map as SVG: tiers from the entry (left) to the
// databases (right), each node coloured by its state and ringed by the worst open alert on
// its application's or its host's CI; the nodes and edges are also listed in tables.
func (c *Console) service(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var (
		f      fetches
		d      mappingapi.Detail
		alerts correlationapi.AlertsListResponse
	)
	f.get(c, r, "/api/v1/services/"+url.PathEscape(name), &d)
	f.get(c, r, "/api/v1/alerts?state=open&limit=500", &alerts)
	errs := f.wait()
	status := http.StatusOK
	if d.Service.Name == "" && len(errs) > 0 {
		status = statusOf(errs[0])
	} else {
		// correlation may not run (or the viewer may not see alerts): the map is still shown
		errs = slices.DeleteFunc(errs, func(err error) bool { return strings.Contains(err.Error(), "/api/v1/alerts") })
	}
	var open []correlationapi.Alert
	if d.Map != nil {
		health := map[string]string{} // CI → worst severity
		for _, a := range alerts.Items {
			if a.CI == "" || a.State == correlationapi.StateClosed {
				continue
			}
			if correlationapi.Rank(a.Severity) > correlationapi.Rank(health[a.CI]) {
				health[a.CI] = a.Severity
			}
		}
		cis := map[string]bool{}
		for i := range d.Map.Nodes {
			n := &d.Map.Nodes[i]
			for _, ci := range []string{n.CIID, n.HostCIID} {
				if sev, ok := health[ci]; ok && ci != "" && correlationapi.Rank(sev) > correlationapi.Rank(n.Health) {
					n.Health = sev
				}
				if ci != "" {
					cis[ci] = true
				}
			}
		}
		for _, a := range alerts.Items {
			if cis[a.CI] && a.State != correlationapi.StateClosed {
				open = append(open, a)
			}
		}
		slices.SortFunc(open, func(a, b correlationapi.Alert) int {
			return cmp.Or(cmp.Compare(correlationapi.Rank(b.Severity), correlationapi.Rank(a.Severity)), b.LastSeen.Compare(a.LastSeen))
		})
	}
	title := "Application service " + name
	data := serviceData{Detail: d, Alerts: open}
	if d.Map != nil {
		data.Map = drawMap(*d.Map)
	}
	c.show(w, r, status, "service", &page{Title: title, Nav: "services", Data: data}, errs...)
}

// svcMap is a service map placed for SVG.
type svcMap struct {
	W, H  float64
	Nodes []svcNode
	Edges []svcEdge
}

type svcNode struct {
	mappingapi.Node
	X, Y, W, H float64
	Title      string // first line: application or process
	Entry      bool
}

type svcEdge struct {
	mappingapi.Edge
	X1, Y1, X2, Y2 float64
	Changed        bool
}

// Geometry of the drawing: a column per depth, a row per node of that depth.
const (
	smBoxW, smBoxH = 210.0, 58.0
	smColGap       = 90.0
	smRowGap       = 28.0
	smPad          = 20.0
)

// drawMap places a map: the entry on the left, each hop one column to the right.
func drawMap(m mappingapi.Map) svcMap {
	cols := map[int][]mappingapi.Node{}
	maxDepth := 0
	for _, n := range m.Nodes {
		cols[n.Depth] = append(cols[n.Depth], n)
		maxDepth = max(maxDepth, n.Depth)
	}
	out := svcMap{}
	pos := map[string]*svcNode{}
	rows := 0
	for d := 0; d <= maxDepth; d++ {
		col := cols[d]
		slices.SortFunc(col, func(a, b mappingapi.Node) int { return cmp.Compare(a.ID, b.ID) })
		rows = max(rows, len(col))
		for i, n := range col {
			title := cmp.Or(n.Application, n.Process, n.Name, n.State)
			out.Nodes = append(out.Nodes, svcNode{Node: n, X: smPad + float64(d)*(smBoxW+smColGap), Y: smPad + float64(i)*(smBoxH+smRowGap),
				W: smBoxW, H: smBoxH, Title: title, Entry: n.ID == m.Root})
		}
	}
	for i := range out.Nodes {
		pos[out.Nodes[i].ID] = &out.Nodes[i]
	}
	changed := map[[2]string]bool{}
	for _, ch := range m.Changes {
		changed[[2]string{ch.Edge.From, ch.Edge.To}] = true
	}
	for _, e := range m.Edges {
		a, b := pos[e.From], pos[e.To]
		if a == nil || b == nil {
			continue
		}
		se := svcEdge{Edge: e, X1: a.X + a.W, Y1: a.Y + a.H/2, X2: b.X, Y2: b.Y + b.H/2, Changed: changed[[2]string{e.From, e.To}]}
		if b.X <= a.X { // back to an earlier column: bottom to bottom
			se.X1, se.Y1, se.X2, se.Y2 = a.X+a.W/2, a.Y+a.H, b.X+b.W/2, b.Y+b.H
		}
		out.Edges = append(out.Edges, se)
	}
	out.W = 2*smPad + float64(maxDepth+1)*smBoxW + float64(maxDepth)*smColGap
	out.H = 2*smPad + float64(max(rows, 1))*smBoxH + float64(max(rows-1, 0))*smRowGap
	return out
}
