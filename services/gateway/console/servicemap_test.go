package console

import (
	"testing"

	mappingapi "github.com/outpost-dev/outpost/libs/api/mapping"
)

// The drawing of a three-tier map with a dead backend: one column per hop from the entry,
// every edge from its source's right side to its target's left side, the dead one kept,
// the moved one marked changed.
func TestDrawMap(t *testing.T) {
	m := mappingapi.Map{Root: "10.0.0.1:80",
		Nodes: []mappingapi.Node{
			{ID: "10.0.0.1:80", State: "ok", Application: "nginx", Depth: 0},
			{ID: "10.0.0.2:8080", State: "ok", Application: "tomcat", Depth: 1},
			{ID: "10.0.0.9:8080", State: "unreachable", Depth: 1},
			{ID: "10.0.0.3:5432", State: "ok", Application: "postgresql", Depth: 2},
		},
		Edges: []mappingapi.Edge{{From: "10.0.0.1:80", To: "10.0.0.2:8080"}, {From: "10.0.0.1:80", To: "10.0.0.9:8080", Dead: true},
			{From: "10.0.0.2:8080", To: "10.0.0.3:5432"}},
		Changes: []mappingapi.EdgeChange{{Change: "moved", Edge: mappingapi.Edge{From: "10.0.0.2:8080", To: "10.0.0.3:5432"}}},
	}
	d := drawMap(m)
	at := map[string]svcNode{}
	for _, n := range d.Nodes {
		at[n.ID] = n
	}
	if len(at) != 4 || !at["10.0.0.1:80"].Entry || at["10.0.0.2:8080"].Entry {
		t.Fatalf("nodes %+v", d.Nodes)
	}
	if !(at["10.0.0.1:80"].X < at["10.0.0.2:8080"].X && at["10.0.0.2:8080"].X == at["10.0.0.9:8080"].X && at["10.0.0.2:8080"].X < at["10.0.0.3:5432"].X) {
		t.Errorf("columns by hop: %+v", at)
	}
	if at["10.0.0.2:8080"].Y == at["10.0.0.9:8080"].Y {
		t.Errorf("two nodes of one column overlap: %+v", at)
	}
	if at["10.0.0.1:80"].Title != "nginx" || at["10.0.0.9:8080"].Title != "unreachable" {
		t.Errorf("titles %q %q", at["10.0.0.1:80"].Title, at["10.0.0.9:8080"].Title)
	}
	if len(d.Edges) != 3 {
		t.Fatalf("edges %+v", d.Edges)
	}
	for _, e := range d.Edges {
		from, to := at[e.From], at[e.To]
		if e.X1 != from.X+from.W || e.X2 != to.X || e.Y1 != from.Y+from.H/2 || e.Y2 != to.Y+to.H/2 {
			t.Errorf("edge %s → %s drawn %v,%v → %v,%v", e.From, e.To, e.X1, e.Y1, e.X2, e.Y2)
		}
		if e.Changed != (e.To == "10.0.0.3:5432") || e.Dead != (e.To == "10.0.0.9:8080") {
			t.Errorf("edge %s → %s: changed %v dead %v", e.From, e.To, e.Changed, e.Dead)
		}
	}
	if last := at["10.0.0.3:5432"]; d.W < last.X+last.W || d.H < at["10.0.0.9:8080"].Y+smBoxH {
		t.Errorf("canvas %vx%v does not hold the nodes", d.W, d.H)
	}
}
