package correlation

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/clock"
)

// The root cause of a topology group is the CI the others depend on, whatever the order
// the alerts came in; alerts outside the window, or on unrelated CIs, stay out.
func TestTopologyRootCause(t *testing.T) {
	rel := func(typ, from, to string) cmdb.Relation { return cmdb.Relation{Type: typ, From: from, To: to} }
	type alert struct {
		id, ci string
		at     time.Duration
	}
	cases := []struct {
		name   string
		rels   []cmdb.Relation
		alerts []alert
		want   map[string][]string // root alert → members; nothing else grouped
	}{
		{"switch and the hosts connected to it, hosts first",
			[]cmdb.Relation{rel("connected_to", "h1", "sw"), rel("connected_to", "h2", "sw"), rel("connected_to", "sw", "h3"), rel("connected_to", "sw", "router")},
			[]alert{{"a-h1", "h1", 0}, {"a-h2", "h2", time.Second}, {"a-sw", "sw", 2 * time.Second}, {"a-h3", "h3", 3 * time.Second}},
			map[string][]string{"a-sw": {"a-h1", "a-h2", "a-sw", "a-h3"}}},
		{"an application runs on a host: the host",
			[]cmdb.Relation{rel("runs_on", "app", "host"), rel("depends_on", "web", "app")},
			[]alert{{"a-web", "web", 0}, {"a-app", "app", time.Second}, {"a-host", "host", 2 * time.Second}},
			map[string][]string{"a-app": {"a-web", "a-app", "a-host"}}},
		{"a rack contains hosts: the rack",
			[]cmdb.Relation{rel("contains", "rack", "h1"), rel("contains", "rack", "h2")},
			[]alert{{"a-h1", "h1", 0}, {"a-h2", "h2", 0}, {"a-rack", "rack", time.Minute}},
			map[string][]string{"a-rack": {"a-h1", "a-h2", "a-rack"}}},
		{"outside the window: no group",
			[]cmdb.Relation{rel("connected_to", "h1", "sw")},
			[]alert{{"a-sw", "sw", 0}, {"a-h1", "h1", 10 * time.Minute}},
			map[string][]string{}},
		{"unrelated CIs: no group",
			[]cmdb.Relation{rel("connected_to", "h1", "sw")},
			[]alert{{"a-sw", "sw", 0}, {"a-x", "x", 0}},
			map[string][]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := newRuleSet()
			s := &service{cfg: DefaultConfig(), rules: rs, clock: clock.NewFake(t0)}
			tp := &topologist{s: s, rels: &relCache{clock: s.clock, ttl: time.Hour, known: map[string]relEntry{}}}
			byCI := map[string][]cmdb.Relation{}
			for _, r := range tc.rels {
				byCI[r.From] = append(byCI[r.From], r)
				byCI[r.To] = append(byCI[r.To], r)
			}
			open := map[string]api.Alert{}
			for _, a := range tc.alerts {
				tp.rels.known[a.ci] = relEntry{rels: byCI[a.ci], until: t0.Add(time.Hour)}
				open["slot-"+a.id] = api.Alert{ID: a.id, CI: a.ci, State: api.StateOpen, FirstSeen: t0.Add(a.at)}
			}
			got := map[string][]string{}
			for _, g := range tp.compute(context.Background(), open) {
				got[g.RootCause] = g.Alerts
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("groups (root → alerts) %v, want %v", got, tc.want)
			}
			for root, members := range got {
				if !slices.Contains(members, root) {
					t.Errorf("root %s not among its group's alerts %v", root, members)
				}
			}
		})
	}
}
