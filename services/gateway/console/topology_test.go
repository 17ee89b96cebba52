package console

import (
	"fmt"
	"math"
	"testing"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
)

func star(n int) cmdbapi.Graph {
	g := cmdbapi.Graph{Nodes: []cmdbapi.Node{{Ref: cmdbapi.Ref{ID: "c", Class: "linux_server", Name: "web01"}}}}
	for i := range n {
		id := fmt.Sprintf("n%03d", i)
		class := "software"
		if i%5 == 0 {
			class = "network_adapter"
		}
		g.Nodes = append(g.Nodes, cmdbapi.Node{Ref: cmdbapi.Ref{ID: id, Class: class, Name: fmt.Sprintf("package-with-a-long-name-%d", i)}, Depth: 1})
		g.Edges = append(g.Edges, cmdbapi.Edge{ID: "e" + id, Type: "contains", From: "c", To: id})
	}
	return g
}

func TestLayoutIsRadialAndFitsItsBox(t *testing.T) {
	for _, n := range []int{0, 1, 3, 14, 15, 40, maxDrawn + 25} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			top := layout(star(n), "c")
			drawn := min(n, maxDrawn)
			if len(top.Nodes) != drawn+1 || len(top.Edges) != drawn || top.Hidden != n-drawn {
				t.Fatalf("%d nodes, %d edges, %d hidden", len(top.Nodes), len(top.Edges), top.Hidden)
			}
			c := top.Nodes[0]
			if !c.Center || c.X != top.W/2 || c.Y != top.H/2 {
				t.Fatalf("center node %+v in %vx%v", c, top.W, top.H)
			}
			seen := map[[2]float64]bool{}
			for _, nd := range top.Nodes[1:] {
				if nd.X-nd.R < 0 || nd.Y-nd.R < 0 || nd.X+nd.R > top.W || nd.Y+nd.R > top.H {
					t.Errorf("node %s at %v,%v is outside %vx%v", nd.ID, nd.X, nd.Y, top.W, top.H)
				}
				if d := math.Hypot(nd.X-c.X, nd.Y-c.Y); d < 100 {
					t.Errorf("node %s only %v from the center", nd.ID, d)
				}
				if seen[[2]float64{nd.X, nd.Y}] {
					t.Errorf("two nodes at %v,%v", nd.X, nd.Y)
				}
				seen[[2]float64{nd.X, nd.Y}] = true
				if len([]rune(nd.Label)) > 22 {
					t.Errorf("label %q not shortened", nd.Label)
				}
			}
			for _, e := range top.Edges {
				if e.Angle < -90 || e.Angle > 90 {
					t.Errorf("edge label upside down: %v°", e.Angle)
				}
				if e.Type != "contains" {
					t.Errorf("edge label %q", e.Type)
				}
			}
		})
	}
}

func TestLayoutOfAnUnknownCenterIsEmpty(t *testing.T) {
	if top := layout(star(3), "nope"); len(top.Nodes) != 0 {
		t.Fatalf("%+v", top)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "/console/",
		"/console/cis?class=x":   "/console/cis?class=x",
		"https://evil.example/":  "/console/",
		"//evil.example/console": "/console/",
		"/api/v1/tokens":         "/console/",
		"/console/../api":        "/console/",
		`/console/\evil`:         "/console/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
