package cmdb_test

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb"
	"github.com/outpost-dev/outpost/services/cmdb/internal/storetest"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// servers is one payload of n servers named host-NNN, every tenth one with Windows, each
// with three relations to its neighbours.
func servers(n int) envelope.CIPayload {
	p := envelope.CIPayload{Source: "import", Observed: now}
	for i := range n {
		class, os := "linux_server", "Linux"
		if i%10 == 8 {
			class, os = "windows_server", "Windows"
		}
		p.Items = append(p.Items, envelope.CIItem{Ref: strconv.Itoa(i), Class: class, Attributes: attrs(
			"name", fmt.Sprintf("host-%03d", i), "serial_number", fmt.Sprintf("SN-Q-%03d", i),
			"ip_address", fmt.Sprintf("10.7.0.%d", i), "os", os, "environment", []string{"production", "test"}[i%2])})
		for k, typ := range []string{"depends_on", "connected_to", "member_of"} {
			p.Relations = append(p.Relations, envelope.CIRelation{Type: typ, From: strconv.Itoa(i), To: strconv.Itoa((i + k + 1) % n)})
		}
	}
	return p
}

// The query endpoints return what was ingested; cursors page through without loss or
// repetition; bad requests get a 400 naming the field, unknown CIs a 404.
func TestQueryEndpoints(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		h := newHub(t, true)
		h.start(t, testConfig(b))
		nc := h.nc
		const n = 120
		out := call[cmdb.IngestResponse](t, nc, cmdb.OpIngest, cmdb.IngestRequest{Payload: servers(n)})
		if len(out.Created) != n || len(out.Relations) != 3*n {
			t.Fatalf("ingest: %d created, %d relations; want %d and %d", len(out.Created), len(out.Relations), n, 3*n)
		}

		t.Run("ls pages", func(t *testing.T) {
			first := call[cmdb.ListResponse](t, nc, cmdb.OpList, cmdb.ListRequest{Class: "server", Limit: 25, Total: true})
			if len(first.Items) != 25 || first.NextCursor == "" || first.Total == nil || *first.Total != n {
				t.Fatalf("first page: %d items, cursor %q, total %v; want 25, a cursor, %d", len(first.Items), first.NextCursor, first.Total, n)
			}
			all := listAll(t, nc, cmdb.ListRequest{Class: "server", Limit: 25})
			ids := map[string]bool{}
			for i, c := range all {
				if ids[c.ID] {
					t.Fatalf("%s on two pages", c.ID)
				}
				ids[c.ID] = true
				if i > 0 && all[i-1].ID >= c.ID {
					t.Fatalf("not in id order at %d", i)
				}
			}
			if len(all) != n {
				t.Fatalf("paged through %d servers, want %d", len(all), n)
			}
		})
		t.Run("ls filters and search", func(t *testing.T) {
			win := listAll(t, nc, cmdb.ListRequest{Class: "server", Filters: map[string]string{"os": "WINDOWS"}, Limit: 5})
			if len(win) != n/10 {
				t.Fatalf("os=windows: %d, want %d", len(win), n/10)
			}
			for _, c := range win {
				if c.Class != "windows_server" || c.Attributes["os"] != "Windows" {
					t.Errorf("os=windows returned %s %s %v", c.Name, c.Class, c.Attributes["os"])
				}
			}
			if got := listAll(t, nc, cmdb.ListRequest{Class: "windows_server"}); len(got) != n/10 {
				t.Errorf("class windows_server: %d, want %d", len(got), n/10)
			}
			both := listAll(t, nc, cmdb.ListRequest{Filters: map[string]string{"os": "linux", "environment": "production"}})
			if len(both) != 48 { // even i, minus the Windows ones
				t.Errorf("os=linux environment=production: %d, want 48", len(both))
			}
			byName := listAll(t, nc, cmdb.ListRequest{Search: "HOST-01"})
			bySerial := listAll(t, nc, cmdb.ListRequest{Search: "sn-q-01"})
			byIP := listAll(t, nc, cmdb.ListRequest{Search: "10.7.0.11"})
			if len(byName) != 10 || len(bySerial) != 10 || len(byIP) != 11 { // host-010..019; 10.7.0.11, 110..119
				t.Errorf("search: by name %d, by serial %d, by IP %d; want 10, 10, 11", len(byName), len(bySerial), len(byIP))
			}
			page := call[cmdb.ListResponse](t, nc, cmdb.OpList, cmdb.ListRequest{Search: "host-01", Total: true})
			if page.Total != nil {
				t.Errorf("a search has no total, got %d", *page.Total)
			}
			if page := call[cmdb.ListResponse](t, nc, cmdb.OpList, cmdb.ListRequest{}); page.Total != nil {
				t.Errorf("total not asked for, got %d", *page.Total)
			}
		})

		hosts := listAll(t, nc, cmdb.ListRequest{Class: "server", Search: "host-000"})
		if len(hosts) != 1 {
			t.Fatalf("host-000: %d CIs", len(hosts))
		}
		id := hosts[0].ID

		t.Run("get and rel", func(t *testing.T) {
			d := call[cmdb.GetResponse](t, nc, cmdb.OpGet, cmdb.IDRequest{ID: id})
			if d.Name != "host-000" || d.Sources["os"].Source != "import" || len(d.Identifiers) == 0 {
				t.Errorf("get: name %q, os source %q, identifiers %v", d.Name, d.Sources["os"].Source, d.Identifiers)
			}
			if len(d.Outgoing) != 3 || len(d.Incoming) != 3 || len(d.History) == 0 {
				t.Errorf("get: %d outgoing, %d incoming, %d history entries; want 3, 3 and some", len(d.Outgoing), len(d.Incoming), len(d.History))
			}
			r := call[cmdb.RelResponse](t, nc, cmdb.OpRel, cmdb.IDRequest{ID: id})
			if r.CI.ID != id || len(r.Outgoing) != 3 || len(r.Incoming) != 3 {
				t.Errorf("rel: %+v", r)
			}
			for _, rel := range r.Incoming {
				if rel.To != id || rel.Peer.ID != rel.From || !strings.HasPrefix(rel.Peer.Name, "host-") {
					t.Errorf("incoming relation %+v", rel)
				}
			}
		})
		t.Run("history pages", func(t *testing.T) {
			for i := range 4 {
				p := envelope.CIPayload{Source: "manual", Observed: now.Add(time.Duration(i+1) * time.Second), Items: []envelope.CIItem{{
					Ref: "h", Class: "linux_server", Attributes: attrs("serial_number", "SN-Q-000", "location", fmt.Sprintf("room %d", i))}}}
				call[cmdb.IngestResponse](t, nc, cmdb.OpIngest, cmdb.IngestRequest{Payload: p})
			}
			var all []store.HistoryEntry
			req := cmdb.HistoryRequest{ID: id, Limit: 2}
			for {
				page := call[cmdb.HistoryResponse](t, nc, cmdb.OpHistory, req)
				if len(page.Items) > 2 {
					t.Fatalf("page of %d, limit 2", len(page.Items))
				}
				all = append(all, page.Items...)
				if page.NextCursor == "" {
					break
				}
				req.Cursor = page.NextCursor
			}
			if len(all) != 5 || string(all[0].New) != `"room 3"` || all[len(all)-1].Attr != "created" {
				t.Errorf("history: %d entries, newest %s %s, oldest %s; want 5, room 3 first, created last", len(all), all[0].Attr, all[0].New, all[len(all)-1].Attr)
			}
		})
		t.Run("graph", func(t *testing.T) {
			g := call[cmdb.GraphResponse](t, nc, cmdb.OpGraph, cmdb.GraphRequest{ID: id, Depth: 2})
			if len(g.Nodes) == 0 || g.Nodes[0].ID != id || g.Nodes[0].Depth != 0 {
				t.Fatalf("graph does not start at the CI: %+v", g.Nodes)
			}
			depths := map[int]int{}
			for _, node := range g.Nodes {
				depths[node.Depth]++
			}
			if depths[1] != 6 || depths[2] == 0 || len(depths) != 3 || g.Truncated {
				t.Errorf("graph depth 2: nodes by depth %v, truncated %v; want 6 neighbours and a second ring", depths, g.Truncated)
			}
			small := call[cmdb.GraphResponse](t, nc, cmdb.OpGraph, cmdb.GraphRequest{ID: id, Depth: 5, MaxNodes: 3})
			if len(small.Nodes) != 3 || !small.Truncated {
				t.Errorf("max_nodes 3: %d nodes, truncated %v", len(small.Nodes), small.Truncated)
			}
		})
		t.Run("counts", func(t *testing.T) {
			c := counts(t, nc)
			if c.Exact["linux_server"] != n-n/10 || c.Exact["windows_server"] != n/10 || c.WithSubclasses["server"] != n ||
				c.WithSubclasses["hardware"] != n || c.Total != n {
				t.Errorf("counts %+v", c)
			}
		})
		t.Run("conflicts", func(t *testing.T) {
			a := discovered("SN-C-A", []string{"02:00:00:00:05:0a"}, attrs("name", "a", "ip_address", "10.5.0.1"))
			b := discovered("SN-C-B", []string{"02:00:00:00:05:0b"}, attrs("name", "b", "ip_address", "10.5.0.2"))
			// No serial, one adapter of each: which device is it? Not ours to guess.
			both := discovered("", []string{"02:00:00:00:05:0a", "02:00:00:00:05:0b"}, attrs("name", "ab", "ip_address", "10.5.0.3"))
			delete(both.Items[0].Attributes, "serial_number")
			// A MAC of A with another serial: the serial says it is not A.
			other := discovered("SN-C-Z", []string{"02:00:00:00:05:0a"}, attrs("name", "z", "ip_address", "10.5.0.4"))
			for _, p := range []envelope.CIPayload{a, b, both, other} {
				call[cmdb.IngestResponse](t, nc, cmdb.OpIngest, cmdb.IngestRequest{Payload: p})
			}
			all := call[cmdb.ConflictsResponse](t, nc, cmdb.OpConflicts, cmdb.PageRequest{})
			if len(all.Items) != 2 || all.NextCursor != "" {
				t.Fatalf("conflicts: %d, cursor %q; want 2 on one page", len(all.Items), all.NextCursor)
			}
			first := call[cmdb.ConflictsResponse](t, nc, cmdb.OpConflicts, cmdb.PageRequest{Limit: 1})
			second := call[cmdb.ConflictsResponse](t, nc, cmdb.OpConflicts, cmdb.PageRequest{Limit: 1, Cursor: first.NextCursor})
			if len(first.Items) != 1 || len(second.Items) != 1 || first.Items[0].ID != all.Items[0].ID || second.Items[0].ID != all.Items[1].ID {
				t.Errorf("conflicts by one: %+v then %+v", first, second)
			}
			if c := all.Items[1]; len(c.Candidates) != 2 || c.Source != "discovery" || !strings.Contains(c.Reason, "matches 2 different CIs") {
				t.Errorf("first conflict %+v: want the payload matching two CIs by MAC", c)
			}
		})
		t.Run("classes", func(t *testing.T) {
			c := call[cmdb.ClassesResponse](t, nc, cmdb.OpClasses, nil)
			var linux *cmdb.ClassInfo
			for i := range c.Classes {
				if c.Classes[i].Name == "linux_server" {
					linux = &c.Classes[i]
				}
			}
			if linux == nil || linux.Parent != "server" || linux.Family != "hardware" || linux.Attributes["cpu_count"] != "int" ||
				linux.Attributes["kernel_release"] != "string" || !slices.Contains(linux.Inherited, "serial_number") ||
				slices.Contains(linux.Inherited, "kernel_release") {
				t.Errorf("linux_server: %+v", linux)
			}
			if c.Classes[0].Name != "ci" || !slices.ContainsFunc(c.Relations, func(r cmdb.RelationInfo) bool { return r.Name == "runs_on" }) {
				t.Errorf("classes start at %s; relations %+v", c.Classes[0].Name, c.Relations)
			}
			i := slices.IndexFunc(c.Families, func(f cmdb.FamilyInfo) bool { return f.Name == "hardware" })
			if i < 0 || len(c.Families[i].Rules) < 3 {
				t.Fatalf("families %+v", c.Families)
			}
			// The rules are data, not only text: what each matches on, or the children it reads.
			hw := c.Families[i].Rules
			if hw[0].Name != "serial_number" || !slices.Equal(hw[0].Attributes, []string{"serial_number"}) || hw[0].Child != nil {
				t.Errorf("hardware's first rule %+v: want serial_number on [serial_number]", hw[0])
			}
			if hw[1].Name != "mac_address" || len(hw[1].Attributes) != 0 || hw[1].Child == nil ||
				*hw[1].Child != (cmdb.RuleChild{Family: "network_adapter", Attribute: "mac_address"}) {
				t.Errorf("hardware's second rule %+v: want the mac_address of network_adapter children", hw[1])
			}
			if !slices.Equal(hw[2].Attributes, []string{"name", "ip_address"}) || hw[2].Needs != "name+ip_address" {
				t.Errorf("hardware's third rule %+v: want [name ip_address]", hw[2])
			}
		})
		t.Run("errors", func(t *testing.T) {
			badPayload := servers(1)
			badPayload.Items[0].Class = "toaster"
			cases := []struct {
				op   string
				req  any
				code int
				want string
			}{
				{cmdb.OpList, cmdb.ListRequest{Class: "toaster"}, http.StatusBadRequest, `class: unknown class "toaster"`},
				{cmdb.OpList, cmdb.ListRequest{Class: "server", Filters: map[string]string{"colour": "red"}}, http.StatusBadRequest, "filters.colour"},
				{cmdb.OpList, cmdb.ListRequest{Limit: 501}, http.StatusBadRequest, "limit 501"},
				{cmdb.OpList, cmdb.ListRequest{Cursor: "!!not a cursor"}, http.StatusBadRequest, "cursor"},
				{cmdb.OpList, map[string]any{"clas": "server"}, http.StatusBadRequest, `unknown field "clas"`},
				{cmdb.OpGet, cmdb.IDRequest{}, http.StatusBadRequest, "id: required"},
				{cmdb.OpGet, cmdb.IDRequest{ID: "01NOPE"}, http.StatusNotFound, "01NOPE"},
				{cmdb.OpRel, cmdb.IDRequest{ID: "01NOPE"}, http.StatusNotFound, "not found"},
				{cmdb.OpHistory, cmdb.HistoryRequest{ID: "01NOPE"}, http.StatusNotFound, "not found"},
				{cmdb.OpGraph, cmdb.GraphRequest{ID: "01NOPE"}, http.StatusNotFound, "not found"},
				{cmdb.OpGraph, cmdb.GraphRequest{ID: id, Depth: 6, MaxNodes: -1}, http.StatusBadRequest, "depth 6"},
				{cmdb.OpGraph, cmdb.GraphRequest{ID: id, Depth: 6, MaxNodes: -1}, http.StatusBadRequest, "max_nodes -1"},
				{cmdb.OpConflicts, cmdb.PageRequest{Limit: -1}, http.StatusBadRequest, "limit -1"},
				{cmdb.OpIngest, cmdb.IngestRequest{Payload: badPayload}, http.StatusBadRequest, `items[0].class: unknown class "toaster"`},
				{cmdb.OpIngest, cmdb.IngestRequest{}, http.StatusBadRequest, "source"},
			}
			for _, c := range cases {
				se := callErr(t, nc, c.op, c.req)
				if se.Code != c.code || !strings.Contains(se.Message, c.want) {
					t.Errorf("%s %+v: %d %q; want %d naming %q", c.op, c.req, se.Code, se.Message, c.code, c.want)
				}
			}
		})
	})
}
