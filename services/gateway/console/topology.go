package console

import (
	"cmp"
	"math"
	"slices"
	"strings"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
)

// maxDrawn bounds the neighbours drawn around a CI; the rest are counted, not drawn (their
// relations are all in the table below the drawing).
const maxDrawn = 60

type topoNode struct {
	ID, Name, Label, Class, Kind string
	X, Y, R                      float64
	Center                       bool
	// LX, LY, Angle, Anchor place the label: along the spoke, outward, never upside down.
	LX, LY, Angle float64
	Anchor        string
}

type topoEdge struct {
	Type                   string
	X1, Y1, X2, Y2, LX, LY float64
	Angle                  float64
}

type topology struct {
	W, H   float64
	Nodes  []topoNode
	Edges  []topoEdge
	Hidden int
}

// layout places a CI's neighbourhood radially: the CI in the middle, its neighbours on a
// circle (two staggered circles when they are many, so labels keep apart), sorted by class
// then name so that kinds sit together. Labels run along the spokes.
func layout(g cmdbapi.Graph, center string) topology {
	var mid *cmdbapi.Node
	var ring []cmdbapi.Node
	for i := range g.Nodes {
		n := g.Nodes[i]
		if n.ID == center {
			mid = &g.Nodes[i]
			continue
		}
		ring = append(ring, n)
	}
	if mid == nil {
		return topology{}
	}
	slices.SortFunc(ring, func(a, b cmdbapi.Node) int {
		return cmp.Or(cmp.Compare(a.Depth, b.Depth), cmp.Compare(a.Class, b.Class), cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	t := topology{}
	if len(ring) > maxDrawn {
		t.Hidden = len(ring) - maxDrawn
		ring = ring[:maxDrawn]
	}
	n := len(ring)
	staggered := n > 14
	r1 := math.Max(130, float64(n)*26/(2*math.Pi))
	if staggered {
		r1 = math.Max(160, float64(n)*22/(2*math.Pi))
	}
	r2 := r1
	if staggered {
		r2 = r1 + 70
	}
	const labelRoom = 150.0
	t.W = 2 * (r2 + labelRoom)
	t.H = t.W
	cx, cy := t.W/2, t.H/2
	pos := map[string]*topoNode{}
	t.Nodes = append(t.Nodes, topoNode{ID: mid.ID, Name: mid.Name, Label: short(28, label(*mid)), Class: mid.Class, Kind: kind(mid.Class),
		X: cx, Y: cy, R: 20, Center: true, LX: cx, LY: cy + 38, Anchor: "middle"})
	for i, nd := range ring {
		theta := 2*math.Pi*float64(i)/float64(n) - math.Pi/2
		r := r1
		if staggered && i%2 == 1 {
			r = r2
		}
		x, y := cx+r*math.Cos(theta), cy+r*math.Sin(theta)
		node := topoNode{ID: nd.ID, Name: nd.Name, Label: short(22, label(nd)), Class: nd.Class, Kind: kind(nd.Class), X: x, Y: y, R: 8}
		deg := theta * 180 / math.Pi
		node.LX, node.LY = cx+(r+14)*math.Cos(theta), cy+(r+14)*math.Sin(theta)
		node.Angle, node.Anchor = deg, "start"
		if math.Cos(theta) < -1e-9 {
			node.Angle, node.Anchor = deg-180, "end"
		}
		t.Nodes = append(t.Nodes, node)
	}
	for i := range t.Nodes {
		pos[t.Nodes[i].ID] = &t.Nodes[i]
	}
	for _, e := range g.Edges {
		a, b := pos[e.From], pos[e.To]
		if a == nil || b == nil || a == b {
			continue
		}
		dx, dy := b.X-a.X, b.Y-a.Y
		d := math.Hypot(dx, dy)
		if d < a.R+b.R+1 {
			continue
		}
		ux, uy := dx/d, dy/d
		// Lines stop at the circles' edges so the arrowhead shows.
		edge := topoEdge{Type: e.Type, X1: a.X + ux*a.R, Y1: a.Y + uy*a.R, X2: b.X - ux*(b.R+2), Y2: b.Y - uy*(b.R+2)}
		edge.LX, edge.LY = a.X+dx*0.55, a.Y+dy*0.55
		deg := math.Atan2(dy, dx) * 180 / math.Pi
		// Text runs left to right whatever the edge's direction.
		if deg > 90 {
			deg -= 180
		} else if deg < -90 {
			deg += 180
		}
		edge.Angle = deg
		t.Edges = append(t.Edges, edge)
	}
	return t.rounded()
}

// rounded keeps the SVG small: a tenth of a pixel is finer than any screen.
func (t topology) rounded() topology {
	r := func(v *float64) { *v = math.Round(*v*10) / 10 }
	r(&t.W)
	r(&t.H)
	for i := range t.Nodes {
		n := &t.Nodes[i]
		for _, v := range []*float64{&n.X, &n.Y, &n.LX, &n.LY, &n.Angle} {
			r(v)
		}
	}
	for i := range t.Edges {
		e := &t.Edges[i]
		for _, v := range []*float64{&e.X1, &e.Y1, &e.X2, &e.Y2, &e.LX, &e.LY, &e.Angle} {
			r(v)
		}
	}
	return t
}

func label(n cmdbapi.Node) string {
	if n.Name != "" {
		return n.Name
	}
	return n.Class + " " + n.ID
}

// kind groups classes into a few colours.
func kind(class string) string {
	switch {
	case strings.Contains(class, "server") && !strings.Contains(class, "web") && !strings.Contains(class, "directory"),
		class == "computer", class == "hardware", strings.Contains(class, "workstation"):
		return "host"
	case strings.Contains(class, "switch"), strings.Contains(class, "router"), strings.Contains(class, "network_gear"),
		strings.Contains(class, "firewall"), class == "printer":
		return "net"
	case class == "software":
		return "sw"
	case class == "ip_address", class == "network_adapter":
		return "addr"
	case class == "certificate":
		return "cert"
	case class == "application", strings.Contains(class, "web"), strings.Contains(class, "database"),
		strings.Contains(class, "directory"), strings.Contains(class, "ldap"):
		return "app"
	}
	return "other"
}
