package mapping

import (
	"testing"

	api "github.com/outpost-dev/outpost/libs/api/mapping"
)

func TestDiffEdges(t *testing.T) {
	e := func(from, to, by string) api.Edge { return api.Edge{From: from, To: to, FoundBy: by} }
	web, app, db1, db2, dead := "10.0.0.1:80", "10.0.0.2:8080", "10.0.0.3:5432", "10.0.0.4:5432", "10.0.0.9:8080"
	base := []api.Edge{e(web, app, "both"), e(web, dead, "configuration"), e(app, db1, "both")}
	for _, c := range []struct {
		name string
		cur  []api.Edge
		want []string // change from→to (previous)
	}{
		{"unchanged", base, nil},
		{"database moved", []api.Edge{e(web, app, "both"), e(web, dead, "configuration"), e(app, db2, "both")}, []string{"moved " + app + "→" + db2 + " (" + db1 + ")"}},
		{"found differently", []api.Edge{e(web, app, "configuration"), e(web, dead, "configuration"), e(app, db1, "both")}, []string{"changed " + web + "→" + app}},
		{"edge gone", []api.Edge{e(web, app, "both"), e(app, db1, "both")}, []string{"removed " + web + "→" + dead}},
		{"edge added beside", append(append([]api.Edge{}, base...), e(app, db2, "connection")), []string{"added " + app + "→" + db2}},
		{"two gone, one new: not a move", []api.Edge{e(web, db2, "both"), e(app, db1, "both")},
			[]string{"added " + web + "→" + db2, "removed " + web + "→" + app, "removed " + web + "→" + dead}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, ch := range diffEdges(base, c.cur) {
				s := ch.Change + " " + ch.Edge.From + "→" + ch.Edge.To
				if ch.Previous != nil {
					s += " (" + ch.Previous.To + ")"
				}
				got = append(got, s)
			}
			if len(got) != len(c.want) {
				t.Fatalf("changes %q, want %q", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Errorf("change %d: %q, want %q", i, got[i], c.want[i])
				}
			}
		})
	}
}
