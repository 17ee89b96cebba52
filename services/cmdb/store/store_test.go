package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
	"github.com/outpost-dev/outpost/services/cmdb/internal/pgtest"
	"github.com/outpost-dev/outpost/services/cmdb/internal/storetest"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.MainNoLeaks(m)) }

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// estate is a small data centre: 30 Linux and 10 Windows servers with one adapter each,
// a web server on every Linux host, and a switch connected to the first five hosts.
func estate(t *testing.T, st store.Store, m *classes.Model) {
	t.Helper()
	eng, err := ire.New(st, m, ire.Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	p := envelope.CIPayload{Source: "discovery", Observed: t0}
	for i := 0; i < 40; i++ {
		class, os := "linux_server", "Linux"
		if i >= 30 {
			class, os = "windows_server", "Windows"
		}
		host := fmt.Sprintf("h%d", i)
		p.Items = append(p.Items,
			envelope.CIItem{Ref: host, Class: class, Attributes: map[string]any{
				"name": fmt.Sprintf("web-%02d", i), "serial_number": fmt.Sprintf("SN-%03d", i),
				"ip_address": fmt.Sprintf("10.0.0.%d", i), "os": os, "cpu_count": 2 + i%2*2}},
			envelope.CIItem{Ref: host + "-eth0", Class: "network_adapter", Parent: host, Attributes: map[string]any{
				"name": "eth0", "mac_address": fmt.Sprintf("02:00:00:00:10:%02x", i)}})
		if class == "linux_server" {
			p.Items = append(p.Items, envelope.CIItem{Ref: host + "-nginx", Class: "web_server", Parent: host,
				Attributes: map[string]any{"name": "nginx", "port": 443}})
		}
	}
	p.Items = append(p.Items, envelope.CIItem{Ref: "sw", Class: "ip_switch", Attributes: map[string]any{
		"name": "core-sw", "serial_number": "FOC1234X0AB"}})
	for i := 0; i < 5; i++ {
		p.Relations = append(p.Relations, envelope.CIRelation{Type: "connected_to", From: "sw", To: fmt.Sprintf("h%d", i)})
	}
	out, err := eng.Ingest(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Created) != 111 {
		t.Fatalf("estate: created %d CIs, want 111", len(out.Created))
	}
}

func listAll(t *testing.T, st store.Store, q store.ListQuery) []store.CI {
	t.Helper()
	var all []store.CI
	for {
		page, err := st.List(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Items...)
		if page.Next == "" {
			return all
		}
		q.Cursor = page.Next
	}
}

func names(cis []store.CI) []string {
	out := make([]string, len(cis))
	for i, c := range cis {
		out[i] = c.Name
	}
	slices.Sort(out)
	return out
}

func TestQueries(t *testing.T) {
	m, err := classes.Default()
	if err != nil {
		t.Fatal(err)
	}
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		ctx := context.Background()
		st := b.Open(t)
		estate(t, st, m)

		t.Run("pagination is complete and stable", func(t *testing.T) {
			all := listAll(t, st, store.ListQuery{Limit: 7})
			if len(all) != 111 {
				t.Fatalf("%d CIs, want 111", len(all))
			}
			for i := 1; i < len(all); i++ {
				if all[i-1].ID >= all[i].ID {
					t.Fatalf("not ordered by id at %d", i)
				}
			}
			if all[0].Attributes == nil || all[0].Class == "" {
				t.Errorf("page items lack attributes or class: %+v", all[0])
			}
		})

		cases := []struct {
			name string
			q    store.ListQuery
			want int
			pick []string // some names that must be there
		}{
			{"class with subclasses", store.ListQuery{Classes: m.Descendants("server")}, 40, nil},
			{"exact class", store.ListQuery{Classes: []string{"windows_server"}}, 10, []string{"web-30"}},
			{"hardware includes the switch", store.ListQuery{Classes: m.Descendants("hardware")}, 41, []string{"core-sw"}},
			{"filter, case-insensitive", store.ListQuery{Filters: []store.AttrFilter{{Attr: "os", Value: "LINUX"}}}, 30, nil},
			{"two filters", store.ListQuery{Filters: []store.AttrFilter{{Attr: "os", Value: "linux"}, {Attr: "cpu_count", Value: "4"}}}, 15, nil},
			{"search name prefix", store.ListQuery{Classes: m.Descendants("server"), Search: "WEB-1"}, 10, []string{"web-10", "web-19"}},
			{"search ip", store.ListQuery{Classes: m.Descendants("hardware"), Search: "10.0.0.2"}, 11, []string{"web-02", "web-20", "web-29"}},
			{"search serial", store.ListQuery{Search: "sn-007"}, 1, []string{"web-07"}},
			{"search a host by its adapter's MAC", store.ListQuery{Classes: m.Descendants("hardware"), Search: "02:00:00:00:10:0a"}, 1, []string{"web-10"}},
			{"search MAC finds host and adapter", store.ListQuery{Search: "02:00:00:00:10:0a"}, 2, []string{"eth0", "web-10"}},
			{"search and filter", store.ListQuery{Search: "web-3", Filters: []store.AttrFilter{{Attr: "os", Value: "windows"}}}, 10, nil},
			{"search and filter exclude", store.ListQuery{Search: "web-2", Filters: []store.AttrFilter{{Attr: "os", Value: "windows"}}}, 0, nil},
			{"nothing", store.ListQuery{Search: "zzz"}, 0, nil},
		}
		// Every plan must give the same answers: with a cap of 1 every condition looks
		// common (walk the table, or drive from the first filter); with the default cap
		// small classes and searches drive.
		for _, planCap := range []int{1, 1000} {
			store.SetPlanCap(st, planCap)
			for _, c := range cases {
				t.Run(fmt.Sprintf("%s/cap %d", c.name, planCap), func(t *testing.T) {
					q := c.q
					q.Limit = 4 // several pages for the bigger results
					got := listAll(t, st, q)
					if len(got) != c.want {
						t.Fatalf("%d CIs, want %d: %v", len(got), c.want, names(got))
					}
					for _, n := range c.pick {
						if !slices.Contains(names(got), n) {
							t.Errorf("%s missing from %v", n, names(got))
						}
					}
					for i := 1; i < len(got); i++ {
						if got[i-1].ID >= got[i].ID {
							t.Fatalf("pages out of id order at %d", i)
						}
					}
				})
			}
		}

		t.Run("counts", func(t *testing.T) {
			counts, err := st.CountByClass(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]int64{"linux_server": 30, "windows_server": 10, "network_adapter": 40, "web_server": 30, "ip_switch": 1}
			for c, n := range want {
				if counts[c] != n {
					t.Errorf("%s: %d, want %d", c, counts[c], n)
				}
			}
			if rolled := m.RollUp(counts); rolled["server"] != 40 || rolled["hardware"] != 41 || rolled["ci"] != 111 {
				t.Errorf("roll-up %v", rolled)
			}
		})

		sw := listAll(t, st, store.ListQuery{Classes: []string{"ip_switch"}})[0]
		t.Run("get", func(t *testing.T) {
			host := listAll(t, st, store.ListQuery{Search: "web-03", Classes: []string{"linux_server"}})[0]
			d, err := st.Get(ctx, host.ID)
			if err != nil {
				t.Fatal(err)
			}
			if d.Sources["os"].Source != "discovery" || !d.Sources["os"].Observed.Equal(t0) {
				t.Errorf("source of os: %+v", d.Sources["os"])
			}
			if len(d.Incoming) != 2 || len(d.Outgoing) != 1 {
				t.Errorf("relations in %+v out %+v: want switch and web server in, adapter out", d.Incoming, d.Outgoing)
			}
			if len(d.History) == 0 || len(d.Identifiers) != 3 {
				t.Errorf("history %d entries, identifiers %v", len(d.History), d.Identifiers)
			}
			if _, err := st.Get(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("unknown id: %v", err)
			}
		})

		t.Run("history pages newest first", func(t *testing.T) {
			eng, err := ire.New(st, m, ire.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i, fw := range []string{"15.2", "17.1"} {
				if _, err := eng.Ingest(ctx, envelope.CIPayload{Source: "discovery", Observed: t0.Add(time.Duration(i+1) * time.Hour),
					Items: []envelope.CIItem{{Ref: "sw", Class: "ip_switch", Attributes: map[string]any{
						"serial_number": "FOC1234X0AB", "firmware_version": fw}}}}); err != nil {
					t.Fatal(err)
				}
			}
			var all []store.HistoryEntry
			q := store.HistoryQuery{CIID: sw.ID, Limit: 1}
			for {
				page, err := st.History(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, page.Items...)
				if page.Next == "" {
					break
				}
				q.Cursor = page.Next
			}
			if len(all) != 3 {
				t.Fatalf("%d entries, want created and two firmware changes: %+v", len(all), all)
			}
			if created := all[2]; created.Attr != "created" || string(created.New) != `{"class":"ip_switch"}` || created.Source != "discovery" {
				t.Errorf("oldest entry %+v, want the creation by discovery", created)
			}
			if string(all[0].Old) != `"15.2"` || string(all[0].New) != `"17.1"` || all[1].Old != nil {
				t.Errorf("firmware history %s→%s, %s→%s", all[0].Old, all[0].New, all[1].Old, all[1].New)
			}
			for i := 1; i < len(all); i++ {
				if all[i-1].ID <= all[i].ID {
					t.Fatalf("not newest first")
				}
			}
		})

		t.Run("graph", func(t *testing.T) {
			g1, err := st.Graph(ctx, sw.ID, 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(g1.Nodes) != 6 || len(g1.Edges) != 5 {
				t.Errorf("depth 1: %d nodes %d edges, want 6 and 5", len(g1.Nodes), len(g1.Edges))
			}
			g2, err := st.Graph(ctx, sw.ID, 2, 0)
			if err != nil {
				t.Fatal(err)
			}
			// switch, 5 hosts, their 5 adapters and 5 web servers
			if len(g2.Nodes) != 16 || len(g2.Edges) != 15 {
				t.Errorf("depth 2: %d nodes %d edges, want 16 and 15", len(g2.Nodes), len(g2.Edges))
			}
			g3, err := st.Graph(ctx, sw.ID, 2, 4)
			if err != nil || !g3.Truncated || len(g3.Nodes) != 4 {
				t.Errorf("capped graph: %d nodes truncated=%v err=%v", len(g3.Nodes), g3.Truncated, err)
			}
			for _, n := range g2.Nodes {
				if n.Class == "" || (n.Depth == 0) != (n.ID == sw.ID) {
					t.Errorf("node %+v", n)
				}
			}
		})

		t.Run("bad cursor", func(t *testing.T) {
			if _, err := st.List(ctx, store.ListQuery{Cursor: "!!"}); err == nil {
				t.Error("accepted")
			}
		})
	})
}

func TestOpenRejectsUnknownDSN(t *testing.T) {
	_, err := store.Open(context.Background(), "mysql://u:secret@h/db", store.Options{})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("want an error without the password, got %v", err)
	}
}

// Opening twice applies migrations once; a second replica starting finds nothing to do.
func TestMigrationsAreIdempotent(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		b.Open(t)
		b.Open(t)
	})
}

// The search index of new CIs is written in bulk (on SQLite from one JSON object per CI,
// with values JSON would escape written as rows): whatever the path and the statement size
// (64, 16, 4 and 1 CIs), every indexed value of every new CI must be found by a filter, as
// the filter normalises it (trimmed, lower-cased), and values that are not indexed (lists,
// long text) must not be.
func TestIndexOfNewCIs(t *testing.T) {
	m, err := classes.Default()
	if err != nil {
		t.Fatal(err)
	}
	// distribution values: plain, needing JSON escapes, non-ASCII, with spaces to trim.
	tricky := []string{`Ubuntu`, `say "hi"`, `back\slash`, "tab\there", "Ünïcödé Ω", "  Padded  ", "<b>&amp;</b>", "\x7fdel"}
	const n = 64 + 16 + 4 + 2 + 1 // every statement size, and twice the smallest
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		ctx := context.Background()
		st := b.Open(t)
		eng, err := ire.New(st, m, ire.Options{Now: func() time.Time { return t0 }})
		if err != nil {
			t.Fatal(err)
		}
		p := envelope.CIPayload{Source: "discovery", Observed: t0}
		for i := range n {
			p.Items = append(p.Items, envelope.CIItem{Ref: fmt.Sprint(i), Class: "linux_server", Attributes: map[string]any{
				"name": fmt.Sprintf("Idx-%03d", i), "serial_number": fmt.Sprintf("IDX-%03d", i),
				"distribution": tricky[i%len(tricky)], "cpu_count": i, "kernel_release": strings.Repeat("k", 300)}})
		}
		out, err := eng.Ingest(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Created) != n {
			t.Fatalf("created %d CIs, want %d", len(out.Created), n)
		}
		find := func(attr, value string) []string {
			t.Helper()
			return names(listAll(t, st, store.ListQuery{Filters: []store.AttrFilter{{Attr: attr, Value: value}}, Limit: 1000}))
		}
		for i := range n {
			name := fmt.Sprintf("Idx-%03d", i)
			for attr, value := range map[string]string{"name": strings.ToUpper(name), "serial_number": fmt.Sprintf("idx-%03d", i), "cpu_count": fmt.Sprint(i)} {
				if got := find(attr, value); !slices.Equal(got, []string{name}) {
					t.Errorf("filter %s = %q: %v, want [%s]", attr, value, got, name)
				}
			}
		}
		for k, v := range tricky {
			var want []string
			for i := k; i < n; i += len(tricky) {
				want = append(want, fmt.Sprintf("Idx-%03d", i))
			}
			if got := find("distribution", strings.ToUpper(v)); !slices.Equal(got, want) {
				t.Errorf("filter distribution = %q: %v, want %v", v, got, want)
			}
		}
		if got := find("kernel_release", strings.Repeat("k", 300)); len(got) != 0 {
			t.Errorf("a 300-character value is not indexed, but its filter found %v", got)
		}
	})
}
