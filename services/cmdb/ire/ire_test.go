package ire_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
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

// fixture is one engine on one fresh database.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	st    store.Store
	eng   *ire.Engine
	model *classes.Model
}

func newFixture(t *testing.T, b storetest.Backend) *fixture {
	t.Helper()
	m, err := classes.Default()
	if err != nil {
		t.Fatal(err)
	}
	st := b.Open(t)
	eng, err := ire.New(st, m, ire.Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: context.Background(), st: st, eng: eng, model: m}
}

func (f *fixture) ingest(p envelope.CIPayload) ire.Outcome {
	f.t.Helper()
	out, err := f.eng.Ingest(f.ctx, p)
	if err != nil {
		f.t.Fatalf("ingest from %s: %v", p.Source, err)
	}
	return out
}

// list returns every CI of a class and its subclasses.
func (f *fixture) list(class string) []store.CI {
	f.t.Helper()
	var all []store.CI
	q := store.ListQuery{Classes: f.model.Descendants(class), Limit: 1000}
	for {
		page, err := f.st.List(f.ctx, q)
		if err != nil {
			f.t.Fatal(err)
		}
		all = append(all, page.Items...)
		if page.Next == "" {
			return all
		}
		q.Cursor = page.Next
	}
}

func (f *fixture) get(id string) store.Detail {
	f.t.Helper()
	d, err := f.st.Get(f.ctx, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

func (f *fixture) history(id string) []store.HistoryEntry {
	f.t.Helper()
	h, err := f.st.History(f.ctx, store.HistoryQuery{CIID: id, Limit: 1000})
	if err != nil {
		f.t.Fatal(err)
	}
	return h.Items
}

// snapshot is everything observable in the store, to prove that something changed nothing.
func (f *fixture) snapshot() string {
	f.t.Helper()
	var b strings.Builder
	counts, err := f.st.CountByClass(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	fmt.Fprintf(&b, "counts %v\n", counts)
	for _, c := range f.list(classes.Root) {
		d := f.get(c.ID)
		j, _ := json.Marshal(d)
		b.Write(j)
		b.WriteByte('\n')
	}
	conf, err := f.st.Conflicts(f.ctx, store.ConflictQuery{Limit: 1000})
	if err != nil {
		f.t.Fatal(err)
	}
	j, _ := json.Marshal(conf)
	b.Write(j)
	return b.String()
}

func attrs(kv ...any) map[string]any {
	m := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func item(ref, class string, a map[string]any) envelope.CIItem {
	return envelope.CIItem{Ref: ref, Class: class, Attributes: a}
}

func child(ref, class, parent string, a map[string]any) envelope.CIItem {
	return envelope.CIItem{Ref: ref, Class: class, Parent: parent, Attributes: a}
}

// discovered is what discovery reports for a Linux host: serial, adapters with MACs, an
// address, and a web server running on it.
func discovered(serial string, macs []string, extra map[string]any) envelope.CIPayload {
	a := attrs("name", "web01", "serial_number", serial, "ip_address", "10.1.2.3", "os", "Linux",
		"os_version", "22.04", "cpu_count", 4, "ram_mb", 4096)
	for k, v := range extra {
		a[k] = v
	}
	p := envelope.CIPayload{Source: "discovery", Observed: t0, Items: []envelope.CIItem{item("host", "linux_server", a)}}
	for i, mac := range macs {
		p.Items = append(p.Items, child(fmt.Sprintf("eth%d", i), "network_adapter", "host",
			attrs("name", fmt.Sprintf("eth%d", i), "mac_address", mac)))
	}
	if len(macs) > 0 {
		p.Items = append(p.Items, child("ip0", "ip_address", "eth0", attrs("address", "10.1.2.3", "prefix_length", 24)))
	}
	p.Items = append(p.Items, child("nginx", "web_server", "host", attrs("name", "nginx", "port", 443, "version", "1.24")))
	return p
}

func historySources(h []store.HistoryEntry) []string {
	var out []string
	for _, e := range h {
		if !slices.Contains(out, e.Source) {
			out = append(out, e.Source)
		}
	}
	slices.Sort(out)
	return out
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	}
	return fmt.Sprint(v)
}

// One server seen by discovery (serial + MACs) and by an import (serial only, other
// attributes), in either order: one CI, attributes follow precedence, history shows both.
func TestDiscoveryAndImportMakeOneCI(t *testing.T) {
	imported := envelope.CIPayload{Source: "import", Observed: t0.Add(time.Hour), Items: []envelope.CIItem{
		{Ref: "row-17", Class: "server", NativeKey: "17", Attributes: attrs(
			"serial_number", " sn-0001 ", // case and spaces differ from discovery's
			"name", "WEB01.corp", "ram_mb", 8192, "asset_tag", "A-100", "location", "Paris")},
	}}
	disc := discovered("SN-0001", []string{"00:50:56:aa:00:01", "00-50-56-AA-00-02"}, nil)
	disc.Observed = t0.Add(2 * time.Hour)

	for _, order := range []string{"discovery first", "import first"} {
		t.Run(order, func(t *testing.T) {
			storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
				f := newFixture(t, b)
				first, second := disc, imported
				if order == "import first" {
					first, second = imported, disc
				}
				f.ingest(first)
				out := f.ingest(second)
				if len(out.Conflicts) > 0 {
					t.Fatalf("conflicts: %+v", out.Conflicts)
				}

				hw := f.list("hardware")
				if len(hw) != 1 {
					t.Fatalf("hardware CIs: got %d, want 1: %+v", len(hw), hw)
				}
				ci := f.get(hw[0].ID)
				if ci.Class != "linux_server" {
					t.Errorf("class %s, want linux_server (the more specific class wins)", ci.Class)
				}
				want := map[string]struct{ value, source string }{
					"name":          {"web01", "discovery"}, // discovery > import
					"ram_mb":        {"4096", "discovery"},
					"asset_tag":     {"A-100", "import"}, // only the import knows it
					"location":      {"Paris", "import"},
					"os_version":    {"22.04", "discovery"},
					"serial_number": {"SN-0001", "discovery"},
				}
				if order == "discovery first" {
					// The import's serial text differs only in case and spacing: same value for
					// identification, and a weaker source does not rewrite it.
					want["serial_number"] = struct{ value, source string }{"SN-0001", "discovery"}
				}
				for a, w := range want {
					if got := str(ci.Attributes[a]); got != w.value || ci.Sources[a].Source != w.source {
						t.Errorf("%s = %q from %s, want %q from %s", a, got, ci.Sources[a].Source, w.value, w.source)
					}
				}
				if ci.Name != "web01" {
					t.Errorf("name column %q, want web01", ci.Name)
				}
				if got := historySources(f.history(ci.ID)); !slices.Equal(got, []string{"discovery", "import"}) {
					t.Errorf("history sources %v, want discovery and import", got)
				}
				if n := len(f.list("network_adapter")); n != 2 {
					t.Errorf("adapters: %d, want 2", n)
				}

				// A stronger source overrides; a weaker one later cannot take it back.
				f.ingest(envelope.CIPayload{Source: "sccm", Observed: t0.Add(3 * time.Hour), Items: []envelope.CIItem{
					item("pc", "computer", attrs("serial_number", "SN-0001", "os_version", "22.04.3 LTS")),
				}})
				again := discovered("SN-0001", []string{"00:50:56:aa:00:01", "00:50:56:aa:00:02"}, attrs("os_version", "24.04", "ram_mb", 16384))
				again.Observed = t0.Add(4 * time.Hour)
				out = f.ingest(again)
				ci = f.get(hw[0].ID)
				if v := str(ci.Attributes["os_version"]); v != "22.04.3 LTS" || ci.Sources["os_version"].Source != "sccm" {
					t.Errorf("os_version %q from %s: discovery must not overwrite sccm", v, ci.Sources["os_version"].Source)
				}
				if v := str(ci.Attributes["ram_mb"]); v != "16384" {
					t.Errorf("ram_mb %q: discovery's own newer value must apply", v)
				}
				if len(out.Updated) != 1 || !slices.Equal(out.Updated[0].Attributes, []string{"ram_mb"}) {
					t.Errorf("updated %+v, want the host with ram_mb only", out.Updated)
				}
				if got := historySources(f.history(ci.ID)); !slices.Equal(got, []string{"discovery", "import", "sccm"}) {
					t.Errorf("history sources %v", got)
				}
			})
		})
	}
}

// Two machines reporting a placeholder serial with different MACs are two CIs; so are
// machines sharing a serial not on the junk list (cloned VMs), found out at identification.
func TestSharedSerialsDoNotMerge(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		f := newFixture(t, b)
		oem := "To Be Filled By O.E.M."
		pa := discovered(oem, []string{"02:00:00:00:00:0a"}, attrs("name", "a", "ip_address", "10.0.0.10"))
		pb := discovered(oem, []string{"02:00:00:00:00:0b"}, attrs("name", "b", "ip_address", "10.0.0.11"))
		f.ingest(pa)
		f.ingest(pb)
		f.ingest(pa)
		if n := len(f.list("hardware")); n != 2 {
			t.Fatalf("junk serial: %d hardware CIs, want 2", n)
		}

		cloned := func(name, mac string) envelope.CIPayload {
			return discovered("VMW-CLONE-42", []string{mac}, attrs("name", name, "ip_address", "10.0.1."+name))
		}
		f.ingest(cloned("1", "02:00:00:00:01:01"))
		out := f.ingest(cloned("2", "02:00:00:00:01:02"))
		if len(out.Created) == 0 || out.Created[0].Class != "linux_server" {
			t.Fatalf("second clone: want a new CI, got %+v", out)
		}
		f.ingest(cloned("1", "02:00:00:00:01:01")) // still found, by its MAC
		f.ingest(cloned("3", "02:00:00:00:01:03"))
		if n := len(f.list("hardware")); n != 5 {
			t.Fatalf("cloned serial: %d hardware CIs, want 5 (2 OEM + 3 clones)", n)
		}
		for _, c := range f.list("hardware") {
			for _, k := range f.get(c.ID).Identifiers {
				if k.Kind == "serial_number" {
					t.Errorf("CI %s still identified by shared serial %s", c.Name, k.Value)
				}
			}
		}
	})
}

// The same payload three times: one CI, history unchanged after the first, nothing
// reported as changed.
func TestIngestIsIdempotent(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		f := newFixture(t, b)
		p := discovered("SN-IDEM", []string{"02:00:00:00:02:01", "02:00:00:00:02:02"}, nil)
		p.Relations = []envelope.CIRelation{{Type: "depends_on", From: "nginx", To: "eth0"}}
		first := f.ingest(p)
		if len(first.Created) != 5 {
			t.Fatalf("created %d CIs, want 5 (host, 2 adapters, ip, web server)", len(first.Created))
		}
		before := f.snapshot()
		for i := 0; i < 2; i++ {
			out := f.ingest(p)
			if len(out.Created)+len(out.Updated)+len(out.Relations) != 0 {
				t.Fatalf("ingest %d changed something: %+v", i+2, out)
			}
			if len(out.Unchanged) != 5 {
				t.Fatalf("ingest %d: %d unchanged, want 5", i+2, len(out.Unchanged))
			}
		}
		if after := f.snapshot(); after != before {
			t.Fatalf("store changed on re-ingest:\nbefore %s\nafter  %s", before, after)
		}
	})
}

// 50 payloads describing the same new device, published concurrently by 5 publishers to
// two replicas: exactly one CI.
func TestConcurrentIngestOfOneNewDevice(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		f := newFixture(t, b)
		// Two engines on two connections pools: two replicas of the service.
		var logs bytes.Buffer // slog handlers serialise their writes
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		var engines []*ire.Engine
		for _, st := range []store.Store{f.st, b.Open(t)} {
			eng, err := ire.New(st, f.model, ire.Options{Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			engines = append(engines, eng)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for g := 0; g < 5; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 10; i++ {
					p := discovered("SN-RACE", []string{"02:00:00:00:03:01", "02:00:00:00:03:02"}, attrs("cpu_count", 2+i%3))
					p.Observed = t0.Add(time.Duration(g*10+i) * time.Second)
					if _, err := engines[(g+i)%2].Ingest(context.Background(), p); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		t.Logf("%d of 50 ingests were retried after colliding with another", strings.Count(logs.String(), "ingest retried"))
		counts, err := f.st.CountByClass(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{"linux_server": 1, "network_adapter": 2, "ip_address": 1, "web_server": 1}
		for c, n := range want {
			if counts[c] != n {
				t.Errorf("%s: %d CIs, want %d (all counts %v)", c, counts[c], n, counts)
			}
		}
	})
}

// Bad input is rejected whole with an error naming the field; the store is unchanged.
func TestBadInputIsRejected(t *testing.T) {
	good := func() envelope.CIPayload { return discovered("SN-GOOD", []string{"02:00:00:00:04:01"}, nil) }
	cases := []struct {
		name  string
		edit  func(p *envelope.CIPayload)
		field string
		want  string
	}{
		{"unknown class", func(p *envelope.CIPayload) { p.Items[0].Class = "mainframe" }, "items[0].class", `unknown class "mainframe"`},
		{"abstract class", func(p *envelope.CIPayload) { p.Items[0].Class = "ci" }, "items[0].class", "abstract"},
		{"missing every identifier", func(p *envelope.CIPayload) {
			p.Items = []envelope.CIItem{item("h", "linux_server", attrs("name", "lonely", "os", "Linux"))}
		}, "items[0].attributes", "no identifier"},
		{"only placeholder identifiers", func(p *envelope.CIPayload) {
			p.Items = []envelope.CIItem{item("h", "linux_server", attrs("serial_number", "Not Specified", "name", "x"))}
		}, "items[0].attributes", "no identifier"},
		{"attribute of the wrong type", func(p *envelope.CIPayload) { p.Items[0].Attributes["cpu_count"] = "4" }, "items[0].attributes.cpu_count", "want int, got string"},
		{"unknown attribute", func(p *envelope.CIPayload) { p.Items[0].Attributes["colour"] = "red" }, "items[0].attributes.colour", "unknown attribute"},
		{"relation to an unknown ref", func(p *envelope.CIPayload) {
			p.Relations = []envelope.CIRelation{{Type: "depends_on", From: "nginx", To: "db"}}
		}, "relations[0].to", `unknown ref "db"`},
		{"relation to an unknown CI type", func(p *envelope.CIPayload) {
			p.Items = append(p.Items, item("q", "quantum_computer", attrs("serial_number", "Q1")))
			p.Relations = []envelope.CIRelation{{Type: "depends_on", From: "nginx", To: "q"}}
		}, "relations[0].to", `unknown class "quantum_computer"`},
		{"relation type unknown", func(p *envelope.CIPayload) {
			p.Relations = []envelope.CIRelation{{Type: "loves", From: "nginx", To: "host"}}
		}, "relations[0].type", `unknown relation type "loves"`},
		{"relation to a class it cannot reach", func(p *envelope.CIPayload) {
			p.Relations = []envelope.CIRelation{{Type: "runs_on", From: "nginx", To: "eth0"}}
		}, "relations[0].to", "runs_on cannot end at network_adapter"},
		{"dependent without parent", func(p *envelope.CIPayload) { p.Items[1].Parent = "" }, "items[1].parent", "required"},
		{"no source", func(p *envelope.CIPayload) { p.Source = "" }, "source", "required"},
	}
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		f := newFixture(t, b)
		f.ingest(discovered("SN-BASE", []string{"02:00:00:00:04:99"}, attrs("name", "base", "ip_address", "10.9.9.9")))
		before := f.snapshot()
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				p := good()
				c.edit(&p)
				_, err := f.eng.Ingest(f.ctx, p)
				var ve *ire.ValidationError
				if !errors.As(err, &ve) || !errors.Is(err, ire.ErrInvalid) {
					t.Fatalf("want a validation error, got %v", err)
				}
				found := false
				for _, pr := range ve.Problems {
					found = found || (pr.Field == c.field && strings.Contains(pr.Reason, c.want))
				}
				if !found {
					t.Errorf("want %s: …%s…, got %v", c.field, c.want, err)
				}
			})
		}
		if after := f.snapshot(); after != before {
			t.Fatalf("a rejected payload changed the store")
		}
	})
}

// An item that two existing CIs claim is not merged: it is recorded as a conflict, once.
func TestConflictsAreRecordedNotMerged(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		f := newFixture(t, b)
		f.ingest(discovered("SN-A", []string{"02:00:00:00:05:0a"}, attrs("name", "a", "ip_address", "10.5.0.1")))
		f.ingest(discovered("SN-B", []string{"02:00:00:00:05:0b"}, attrs("name", "b", "ip_address", "10.5.0.2")))

		// No serial, one adapter of each: which device is it? Not ours to guess.
		both := discovered("", []string{"02:00:00:00:05:0a", "02:00:00:00:05:0b"}, attrs("name", "ab", "ip_address", "10.5.0.3"))
		delete(both.Items[0].Attributes, "serial_number")
		for i := 0; i < 2; i++ {
			out := f.ingest(both)
			if len(out.Conflicts) != 1 || len(out.Conflicts[0].Candidates) != 2 {
				t.Fatalf("want one conflict with two candidates, got %+v", out.Conflicts)
			}
			if len(out.Created)+len(out.Updated) != 0 || len(out.Skipped) != 4 {
				t.Fatalf("the conflicting item and its children must be skipped: %+v", out)
			}
		}
		// A MAC of A with another serial: the serial says it is not A.
		other := discovered("SN-Z", []string{"02:00:00:00:05:0a"}, attrs("name", "z", "ip_address", "10.5.0.4"))
		if out := f.ingest(other); len(out.Conflicts) != 1 || !strings.Contains(out.Conflicts[0].Reason, "serial_number differs") {
			t.Fatalf("want a serial mismatch conflict, got %+v", out.Conflicts)
		}
		if n := len(f.list("hardware")); n != 2 {
			t.Fatalf("%d hardware CIs, want 2", n)
		}
		conf, err := f.st.Conflicts(f.ctx, store.ConflictQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if len(conf.Items) != 2 {
			t.Fatalf("conflicts list: %d, want 2 (the repeated payload is one conflict): %+v", len(conf.Items), conf.Items)
		}
		for _, c := range conf.Items {
			if c.Source != "discovery" || c.Class != "linux_server" || len(c.Item) == 0 {
				t.Errorf("conflict %+v lacks its source, class or item", c)
			}
		}

		// A name and address reused by a device with another serial move to the new CI.
		reuse := envelope.CIPayload{Source: "discovery", Observed: t0.Add(time.Hour), Items: []envelope.CIItem{
			item("h", "linux_server", attrs("serial_number", "SN-NEW", "name", "a", "ip_address", "10.5.0.1")),
		}}
		if out := f.ingest(reuse); len(out.Created) != 1 || len(out.Conflicts) != 0 {
			t.Fatalf("reused name and IP: want a new CI, got %+v", out)
		}
		for _, c := range f.list("hardware") {
			for _, k := range f.get(c.ID).Identifiers {
				if k.Kind == "name_ip" && k.Value == "a|10.5.0.1" && c.Attributes["serial_number"] != "SN-NEW" {
					t.Errorf("name_ip still held by the old device %s", c.ID)
				}
			}
		}
	})
}

// Dependent CIs are identified through their parent: the same package on two hosts is two
// CIs; on one host, once. Parent links become relations.
func TestDependentsAreIdentifiedThroughTheirParent(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		f := newFixture(t, b)
		withSoftware := func(serial, mac string) envelope.CIPayload {
			p := discovered(serial, []string{mac}, attrs("name", serial, "ip_address", "10.6.0."+serial[len(serial)-1:]))
			p.Items = append(p.Items,
				child("ssl", "software", "host", attrs("name", "openssl", "version", "3.0.11")),
				child("ssl-old", "software", "host", attrs("name", "openssl", "version", "1.1.1")))
			return p
		}
		f.ingest(withSoftware("SN-H1", "02:00:00:00:06:01"))
		f.ingest(withSoftware("SN-H2", "02:00:00:00:06:02"))
		f.ingest(withSoftware("SN-H1", "02:00:00:00:06:01"))
		if n := len(f.list("software")); n != 4 {
			t.Fatalf("software CIs: %d, want 4 (2 versions × 2 hosts)", n)
		}
		if n := len(f.list("application")); n != 2 {
			t.Fatalf("web servers: %d, want 2", n)
		}
		hosts := f.list("hardware")
		d := f.get(hosts[0].ID)
		var out, in []string
		for _, r := range d.Outgoing {
			out = append(out, r.Type+">"+r.Peer.Class)
		}
		for _, r := range d.Incoming {
			in = append(in, r.Type+"<"+r.Peer.Class)
		}
		slices.Sort(out)
		if want := []string{"contains>network_adapter", "contains>software", "contains>software"}; !slices.Equal(out, want) {
			t.Errorf("outgoing %v, want %v", out, want)
		}
		if want := []string{"runs_on<web_server"}; !slices.Equal(in, want) {
			t.Errorf("incoming %v, want %v", in, want)
		}
	})
}

// A CI not seen for the configured time is marked stale, never deleted, and un-marked when
// a source sees it again.
func TestStaleness(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		f := newFixture(t, b)
		f.ingest(discovered("SN-OLD", []string{"02:00:00:00:07:01"}, nil))
		if refs, err := f.eng.MarkStale(f.ctx, 72*time.Hour, t0.Add(24*time.Hour), nil); err != nil || len(refs) != 0 {
			t.Fatalf("nothing is stale after a day: %v %v", refs, err)
		}
		refs, err := f.eng.MarkStale(f.ctx, 72*time.Hour, t0.Add(96*time.Hour), nil)
		if err != nil || len(refs) != 4 {
			t.Fatalf("mark stale: %d refs, %v; want 4 (host, adapter, address, web server)", len(refs), err)
		}
		stale := true
		page, err := f.st.List(f.ctx, store.ListQuery{Stale: &stale})
		if err != nil || len(page.Items) != 4 {
			t.Fatalf("stale CIs: %d, %v", len(page.Items), err)
		}
		host := f.list("hardware")[0]
		h := f.history(host.ID)
		if h[0].Attr != "stale" || h[0].Source != ire.StaleSource || string(h[0].New) != "true" {
			t.Errorf("latest history %+v, want stale=true by cmdb", h[0])
		}
		again := discovered("SN-OLD", []string{"02:00:00:00:07:01"}, nil)
		again.Observed = t0.Add(100 * time.Hour)
		out := f.ingest(again)
		if len(out.Updated) != 4 || !slices.Contains(out.Updated[0].Attributes, "stale") {
			t.Fatalf("seen again: %+v", out.Updated)
		}
		if c := f.get(host.ID); c.Stale || !c.LastSeen.Equal(again.Observed) {
			t.Errorf("after being seen: stale=%v last_seen=%v", c.Stale, c.LastSeen)
		}
	})
}

func TestPrecedence(t *testing.T) {
	p, err := ire.ParsePrecedence("manual > sccm > discovery > import")
	if err != nil {
		t.Fatal(err)
	}
	p.Attributes = map[string][]string{"os_version": {"sccm", "manual"}}
	if !(p.Rank("name", "manual") > p.Rank("name", "sccm") && p.Rank("name", "import:hr") == p.Rank("name", "import") &&
		p.Rank("name", "ldap") == 0 && p.Rank("os_version", "sccm") > p.Rank("os_version", "manual")) {
		t.Errorf("ranks wrong: %+v", p)
	}
	if _, err := ire.ParsePrecedence("a > > b"); err == nil {
		t.Error("empty name accepted")
	}
}

// Class changes follow the same idea as attributes: more specific wins, a sibling class
// only from a source at least as strong as those that described the CI.
func TestClassReconciliation(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		f := newFixture(t, b)
		one := func(source, class string, hour int) {
			f.ingest(envelope.CIPayload{Source: source, Observed: t0.Add(time.Duration(hour) * time.Hour), Items: []envelope.CIItem{
				item("h", class, attrs("serial_number", "SN-CLASS", "name", "box")),
			}})
		}
		class := func() string { return f.list("hardware")[0].Class }
		one("import", "computer", 0)
		one("discovery", "linux_server", 1)
		if c := class(); c != "linux_server" {
			t.Fatalf("more specific class: %s", c)
		}
		one("import", "windows_server", 2)
		if c := class(); c != "linux_server" {
			t.Fatalf("a weaker source changed the class to %s", c)
		}
		one("manual", "windows_server", 3)
		if c := class(); c != "windows_server" {
			t.Fatalf("manual must win: %s", c)
		}
		if n := len(f.list("hardware")); n != 1 {
			t.Fatalf("%d CIs", n)
		}
	})
}

// Results replayed late (an older observation from the same source) do not undo newer ones;
// native keys identify what a source has sent before.
func TestOrderAndNativeKeys(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		f := newFixture(t, b)
		row := func(hour int, ram int) envelope.CIPayload {
			return envelope.CIPayload{Source: "import:cmdb-csv", Observed: t0.Add(time.Duration(hour) * time.Hour), Items: []envelope.CIItem{
				{Ref: "r1", Class: "server", NativeKey: "ROW-1", Attributes: attrs("name", "legacy", "ram_mb", ram)},
			}}
		}
		f.ingest(row(2, 2048))
		f.ingest(row(1, 1024)) // replayed: older
		f.ingest(row(3, 4096))
		hw := f.list("hardware")
		if len(hw) != 1 || str(hw[0].Attributes["ram_mb"]) != "4096" {
			t.Fatalf("want one CI with ram 4096, got %+v", hw)
		}
		// An older observation never wins over a newer one from the same source.
		f.ingest(row(0, 512))
		if v := str(f.list("hardware")[0].Attributes["ram_mb"]); v != "4096" {
			t.Fatalf("late replay overwrote: %s", v)
		}
	})
}

// One machine seen on two addresses by one source: the class follows the evidence
// (credentialed > snmp > ports), a more specific class is an explicit reclassification
// that keeps the CI's id, relations and history, and weaker evidence never moves the class
// sideways (nor replaces the evidence it rests on).
func TestClassEvidencePrecedence(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		for _, tc := range []struct {
			name  string
			steps []struct{ class, evidence, ip string }
			want  string
			by    string
		}{
			{"ports, then credentialed, then an SNMP guess", []struct{ class, evidence, ip string }{
				{"server", "ports", "127.77.1.10"}, {"linux_server", "credentialed", "127.77.1.11"}, {"windows_server", "snmp", "127.77.1.10"}, {"windows_server", "ports", "127.77.1.10"}, {"linux_server", "snmp", "127.77.1.10"},
			}, "linux_server", "credentialed"},
			{"an SNMP guess, then credentialed", []struct{ class, evidence, ip string }{
				{"windows_server", "snmp", "127.77.1.20"}, {"linux_server", "credentialed", "127.77.1.21"},
			}, "linux_server", "credentialed"},
			{"equal evidence: the newer observation", []struct{ class, evidence, ip string }{
				{"windows_server", "ports", "127.77.1.30"}, {"linux_server", "ports", "127.77.1.31"},
			}, "linux_server", "ports"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := newFixture(t, b)
				serial := "SN-EVID-" + tc.steps[0].ip
				for i, s := range tc.steps {
					f.ingest(envelope.CIPayload{Source: "discovery", Observed: t0.Add(time.Duration(i) * time.Minute), Items: []envelope.CIItem{
						item("h", s.class, attrs("serial_number", serial, "name", serial, "ip_address", s.ip,
							"class_evidence", s.evidence, "class_evidence_source", "probe on "+s.ip)),
						child("ip", "ip_address", "h", attrs("name", s.ip, "address", s.ip)),
					}})
				}
				var all []store.CI // the backend's database is shared by the cases
				for _, c := range f.list("hardware") {
					if c.Name == serial {
						all = append(all, c)
					}
				}
				if len(all) != 1 {
					t.Fatalf("%d CIs, want one machine", len(all))
				}
				d := f.get(all[0].ID)
				if d.Class != tc.want || str(d.Attributes["class_evidence"]) != tc.by {
					t.Fatalf("class %s by %v, want %s by %s", d.Class, d.Attributes["class_evidence"], tc.want, tc.by)
				}
				// both addresses stay the machine's
				addrs := map[string]bool{}
				for _, a := range f.list("ip_address") {
					addrs[a.Name] = true
				}
				for _, s := range tc.steps {
					if !addrs[s.ip] {
						t.Errorf("address %s lost (have %v)", s.ip, addrs)
					}
				}
				// every class change is in the CI's history, from its first class on
				var changes []string
				for _, h := range f.history(d.ID) {
					if h.Attr == "class" {
						changes = append(changes, string(h.Old)+"→"+string(h.New))
					}
				}
				if tc.steps[0].class != tc.want && len(changes) == 0 {
					t.Errorf("class went %s → %s without a history entry", tc.steps[0].class, tc.want)
				}
			})
		}
	})
}

// An SCCM import sends one row per network adapter: each payload carries the computer with
// one of its adapters. Payloads that share the serial and the name but not the adapters
// are parts of one device — one CI with every adapter, its serial still identifying it —
// whether they arrive one by one or in one batch; a clone with the serial under another
// name still makes the serial shared.
func TestPartialAdapterPayloadsMerge(t *testing.T) {
	part := func(name, mac, ip string) envelope.CIPayload {
		return envelope.CIPayload{Source: "sccm", Observed: t0, Items: []envelope.CIItem{
			item("pc", "windows_server", attrs("name", name, "serial_number", "SCCM-SN-0001", "ip_address", ip)),
			child("nic", "network_adapter", "pc", attrs("mac_address", mac)),
		}}
	}
	parts := []envelope.CIPayload{
		part("PC-01", "02:00:00:00:0a:01", "10.9.0.1"),
		part("pc-01", "02:00:00:00:0a:02", "10.9.0.2"), // names compare case-insensitively
		part("PC-01 ", "02:00:00:00:0a:03", "10.9.0.3"),
	}
	for _, mode := range []string{"one by one", "one batch"} {
		t.Run(mode, func(t *testing.T) {
			storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
				f := newFixture(t, b)
				if mode == "one by one" {
					for _, p := range parts {
						f.ingest(p)
					}
				} else {
					for i, r := range f.eng.IngestBatch(f.ctx, prepare(t, f.eng, parts)) {
						if r.Err != nil {
							t.Fatalf("payload %d: %v", i, r.Err)
						}
					}
				}
				hw := f.list("hardware")
				if len(hw) != 1 {
					t.Fatalf("%d hardware CIs %+v, want 1: the parts are one computer", len(hw), hw)
				}
				d := f.get(hw[0].ID)
				var serial bool
				for _, k := range d.Identifiers {
					serial = serial || (k.Kind == "serial_number" && k.Value == "sccm-sn-0001")
				}
				if !serial {
					t.Errorf("identifiers %+v: the serial no longer identifies the computer", d.Identifiers)
				}
				if n := len(f.list("network_adapter")); n != 3 {
					t.Errorf("%d adapters, want 3", n)
				}

				// A clone: the same serial, another name, another adapter.
				out := f.ingest(part("pc-02", "02:00:00:00:0b:01", "10.9.1.1"))
				if len(out.Created) == 0 || out.Created[0].Class != "windows_server" {
					t.Fatalf("clone under another name: want a new CI, got %+v", out)
				}
				if n := len(f.list("hardware")); n != 2 {
					t.Errorf("%d hardware CIs after the clone, want 2", n)
				}
				for _, c := range f.list("hardware") {
					for _, k := range f.get(c.ID).Identifiers {
						if k.Kind == "serial_number" {
							t.Errorf("CI %s still identified by the cloned serial %s", c.Name, k.Value)
						}
					}
				}
			})
		})
	}
}
