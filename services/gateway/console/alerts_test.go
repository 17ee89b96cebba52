package console

import (
	"testing"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// The drawing of a topology group: a switch (the root cause) in the first column, the hosts
// connected to it one hop further, a host's application two hops; each node named after the
// group's alert on it and ringed by its severity; every link drawn from the root's side.
func TestDrawGroup(t *testing.T) {
	g := api.TopologyGroup{ID: "g1", RootCause: "a-sw", RootCI: "ci-sw", RootNode: "sw-1",
		CIs: []string{"ci-sw", "ci-h1", "ci-h2", "ci-app"},
		Links: []api.TopologyLink{{Type: "connected_to", From: "ci-h1", To: "ci-sw"}, {Type: "connected_to", From: "ci-sw", To: "ci-h2"},
			{Type: "runs_on", From: "ci-app", To: "ci-h2"}}}
	alerts := []api.Alert{{ID: "a-sw", CI: "ci-sw", Node: "10.0.0.1", Severity: "critical"}, {ID: "a-h1", CI: "ci-h1", Node: "h1", Severity: "major"},
		{ID: "a-h2", CI: "ci-h2", Node: "h2", Severity: "minor"}, {ID: "a-h2b", CI: "ci-h2", Node: "h2", Severity: "major"},
		{ID: "a-app", CI: "ci-app", Node: "app", Severity: "warning"}}
	d := drawGroup(g, alerts, "ci-h1")
	at := map[string]groupNode{}
	for _, n := range d.Nodes {
		at[n.CI] = n
	}
	if len(at) != 4 {
		t.Fatalf("nodes %+v", d.Nodes)
	}
	sw, h1, h2, app := at["ci-sw"], at["ci-h1"], at["ci-h2"], at["ci-app"]
	if !sw.Root || h1.Root || sw.Title != "sw-1" || !h1.Current || sw.Current {
		t.Errorf("root/current/title: %+v %+v", sw, h1)
	}
	if !(sw.X < h1.X && h1.X == h2.X && h2.X < app.X) || h1.Y == h2.Y {
		t.Errorf("columns by hops from the root: sw %v h1 %v,%v h2 %v,%v app %v", sw.X, h1.X, h1.Y, h2.X, h2.Y, app.X)
	}
	if h2.Severity != "major" || h2.Alert != "a-h2b" || app.Title != "app" {
		t.Errorf("worst alert of a CI: %+v %+v", h2, app)
	}
	if len(d.Edges) != 3 {
		t.Fatalf("edges %+v", d.Edges)
	}
	for _, e := range d.Edges {
		if e.X1 >= e.X2 {
			t.Errorf("edge %s %s %s drawn right to left: %v → %v", e.From, e.Type, e.To, e.X1, e.X2)
		}
	}
	if d.W < app.X+app.W || d.H < h2.Y+h2.H {
		t.Errorf("canvas %vx%v does not hold the nodes", d.W, d.H)
	}
	// a CI of the group not linked (yet) is drawn after the others, not lost
	g.CIs = append(g.CIs, "ci-lone")
	if d := drawGroup(g, alerts, ""); len(d.Nodes) != 5 {
		t.Errorf("unlinked CI not drawn: %+v", d.Nodes)
	}
}
