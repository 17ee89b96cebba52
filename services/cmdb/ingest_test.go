package cmdb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb"
	"github.com/outpost-dev/outpost/services/cmdb/internal/storetest"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// now is the observation time of the tests' payloads: recent, so nothing is stale.
var now = time.Now().UTC().Truncate(time.Second)

func attrs(kv ...any) map[string]any {
	m := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// discovered is what discovery reports for a Linux host: serial, adapters with MACs, an
// address, and a web server running on it.
func discovered(serial string, macs []string, extra map[string]any) envelope.CIPayload {
	a := attrs("name", "web01", "serial_number", serial, "ip_address", "10.1.2.3", "os", "Linux",
		"os_version", "22.04", "cpu_count", 4, "ram_mb", 4096)
	for k, v := range extra {
		a[k] = v
	}
	p := envelope.CIPayload{Source: "discovery", Observed: now, Items: []envelope.CIItem{{Ref: "host", Class: "linux_server", Attributes: a}}}
	for i, mac := range macs {
		p.Items = append(p.Items, envelope.CIItem{Ref: fmt.Sprintf("eth%d", i), Class: "network_adapter", Parent: "host",
			Attributes: attrs("name", fmt.Sprintf("eth%d", i), "mac_address", mac)})
	}
	if len(macs) > 0 {
		p.Items = append(p.Items, envelope.CIItem{Ref: "ip0", Class: "ip_address", Parent: "eth0", Attributes: attrs("address", "10.1.2.3", "prefix_length", 24)})
	}
	p.Items = append(p.Items, envelope.CIItem{Ref: "nginx", Class: "web_server", Parent: "host", Attributes: attrs("name", "nginx", "port", 443, "version", "1.24")})
	return p
}

func counts(t testing.TB, nc *nats.Conn) cmdb.CountsResponse {
	t.Helper()
	return call[cmdb.CountsResponse](t, nc, cmdb.OpCounts, nil)
}

// listAll pages through ls with the given request and returns every CI.
func listAll(t testing.TB, nc *nats.Conn, req cmdb.ListRequest) []store.CI {
	t.Helper()
	var all []store.CI
	for {
		page := call[cmdb.ListResponse](t, nc, cmdb.OpList, req)
		all = append(all, page.Items...)
		if page.NextCursor == "" {
			return all
		}
		req.Cursor = page.NextCursor
	}
}

func str(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// Bad input on cmdb.ingest.N lands in the DLQ with a reason naming the field, the store is
// unchanged, and the consumer goes on with the next payload of the partition.
func TestBadInputGoesToDLQ(t *testing.T) {
	good := discovered("SN-GOOD", []string{"02:00:00:00:04:01"}, nil)
	bad := []struct {
		name  string
		edit  func(p *envelope.CIPayload)
		field string
	}{
		{"unknown class", func(p *envelope.CIPayload) { p.Items[0].Class = "toaster" }, `items[0].class: unknown class "toaster"`},
		{"missing every identifier", func(p *envelope.CIPayload) {
			p.Items = []envelope.CIItem{{Ref: "h", Class: "linux_server", Attributes: attrs("os", "Linux", "serial_number", "To Be Filled By O.E.M.")}}
		}, "items[0].attributes: no identifier"},
		{"attribute of the wrong type", func(p *envelope.CIPayload) { p.Items[0].Attributes["cpu_count"] = "four" }, "items[0].attributes.cpu_count: want int, got string"},
		{"relation to an unknown CI type", func(p *envelope.CIPayload) {
			p.Items = append(p.Items, envelope.CIItem{Ref: "q", Class: "quantum_computer", Attributes: attrs("serial_number", "Q1")})
			p.Relations = []envelope.CIRelation{{Type: "depends_on", From: "nginx", To: "q"}}
		}, `relations[0].to: item "q" has unknown class "quantum_computer"`},
		{"unknown relation type", func(p *envelope.CIPayload) {
			p.Relations = []envelope.CIRelation{{Type: "loves", From: "nginx", To: "host"}}
		}, `relations[0].type: unknown relation type "loves"`},
	}
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		h := newHub(t, true)
		h.start(t, testConfig(b))
		// Everything on the good payload's partition: the bad ones must not block it.
		subject := cmdb.IngestSubject(good, cmdb.DefaultPartitions)
		for _, c := range bad {
			p := discovered("SN-GOOD", []string{"02:00:00:00:04:01"}, nil)
			c.edit(&p)
			h.publishOn(t, subject, p)
		}
		// A body the envelope itself refuses (no items) is dead-lettered before the engine.
		meta := envelope.NewMeta(envelope.TypeCI, envelope.ServiceSource("import"))
		if _, err := h.js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Header: meta.Headers(nil), Data: []byte(`{"source":"import","items":[]}`)}); err != nil {
			t.Fatal(err)
		}
		h.drained(t, 30*time.Second)

		dlq := h.msgs(t, bus.StreamDLQ)
		if len(dlq) != len(bad)+1 {
			t.Fatalf("DLQ holds %d messages, want %d", len(dlq), len(bad)+1)
		}
		// A partition's payloads are handled concurrently: find each one's dead letter by reason.
		for _, c := range bad {
			i := slices.IndexFunc(dlq, func(m *jetstream.RawStreamMsg) bool {
				return strings.Contains(m.Header.Get(bus.HeaderDLQReason), c.field)
			})
			if i < 0 {
				t.Errorf("%s: no dead letter with a reason naming %s", c.name, c.field)
				continue
			}
			m := dlq[i]
			reason := m.Header.Get(bus.HeaderDLQReason)
			if m.Subject != bus.DLQOriginSubject(cmdb.Name, bus.OriginHub) || m.Header.Get(bus.HeaderDLQCode) != bus.CodePermanent ||
				m.Header.Get(bus.HeaderDLQSubject) != subject {
				t.Errorf("%s: DLQ message on %s, code %q, from %q, reason %q; want dlq.cmdb.hub, permanent, %s, a reason naming %s",
					c.name, m.Subject, m.Header.Get(bus.HeaderDLQCode), m.Header.Get(bus.HeaderDLQSubject), reason, subject, c.field)
			}
		}
		if !slices.ContainsFunc(dlq, func(m *jetstream.RawStreamMsg) bool {
			return m.Header.Get(bus.HeaderDLQCode) == bus.CodeDecode && strings.Contains(m.Header.Get(bus.HeaderDLQReason), "items")
		}) {
			t.Errorf("empty payload: no dead letter with code decode naming items")
		}
		if c := counts(t, h.nc); c.Total != 0 {
			t.Fatalf("rejected payloads wrote CIs: %v", c.Exact)
		}
		if conf := call[cmdb.ConflictsResponse](t, h.nc, cmdb.OpConflicts, nil); len(conf.Items) != 0 {
			t.Fatalf("rejected payloads recorded conflicts: %+v", conf.Items)
		}

		h.publishOn(t, subject, good)
		eventually(t, 30*time.Second, func() error {
			if c := counts(t, h.nc); c.WithSubclasses["hardware"] != 1 || c.Total != 4 {
				return fmt.Errorf("counts %v, want the good payload's host, adapter, address and web server", c.Exact)
			}
			return nil
		})
	})
}

// The same payload three times: one CI, one set of change events, history as after the first.
func TestSamePayloadThreeTimes(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		h := newHub(t, true)
		h.start(t, testConfig(b))
		p := discovered("SN-IDEM", []string{"02:00:00:00:02:01", "02:00:00:00:02:02"}, nil)
		p.Relations = []envelope.CIRelation{{Type: "depends_on", From: "nginx", To: "eth0"}}

		h.publish(t, p)
		h.drained(t, 30*time.Second)
		hosts := listAll(t, h.nc, cmdb.ListRequest{Class: "hardware"})
		if len(hosts) != 1 {
			t.Fatalf("%d hardware CIs after the first payload, want 1", len(hosts))
		}
		history := call[cmdb.HistoryResponse](t, h.nc, cmdb.OpHistory, cmdb.HistoryRequest{ID: hosts[0].ID})
		eventually(t, 10*time.Second, func() error {
			if n := len(h.changes(t)); n != 5 {
				return fmt.Errorf("%d change events, want 5 (host, 2 adapters, address, web server)", n)
			}
			return nil
		})

		h.publish(t, p)
		h.publish(t, p)
		h.drained(t, 30*time.Second)
		time.Sleep(200 * time.Millisecond) // a late change event would show now

		if n := len(listAll(t, h.nc, cmdb.ListRequest{Class: "hardware"})); n != 1 {
			t.Fatalf("%d hardware CIs after three payloads, want 1", n)
		}
		if c := counts(t, h.nc); c.Total != 5 {
			t.Fatalf("counts %v, want 5 CIs", c.Exact)
		}
		again := call[cmdb.HistoryResponse](t, h.nc, cmdb.OpHistory, cmdb.HistoryRequest{ID: hosts[0].ID})
		if a, b := mustJSON(t, history), mustJSON(t, again); a != b {
			t.Fatalf("history changed on re-ingest:\nbefore %s\nafter  %s", a, b)
		}
		evs := h.changes(t)
		if len(evs) != 5 {
			t.Fatalf("%d change events after three payloads, want 5: %+v", len(evs), evs)
		}
		seen := map[string]bool{}
		for _, e := range evs {
			if e.Op != cmdb.OpCreated || e.Source != "discovery" || seen[e.CI] {
				t.Errorf("change event %+v: want one created event per CI, from discovery", e)
			}
			seen[e.CI] = true
		}
		// each payload gets a receipt saying what its items became
		eventually(t, 10*time.Second, func() error {
			rs := h.receipts(t)
			if len(rs) != 3 {
				return fmt.Errorf("%d receipts, want 3", len(rs))
			}
			for i, r := range rs {
				want := [3]int{0, 0, 5}
				if i == 0 {
					want = [3]int{5, 0, 0}
				}
				if got := [3]int{r.Created, r.Updated, r.Unchanged}; got != want || r.Items != 5 || r.Payload == "" {
					return fmt.Errorf("receipt %d: %+v, want created/updated/unchanged %v", i, r, want)
				}
				// and what each item became, by its ref (importers tell a row's CI from its neighbours)
				op := "unchanged"
				if i == 0 {
					op = "created"
				}
				if len(r.Refs) != 5 {
					return fmt.Errorf("receipt %d: refs %v, want the 5 items", i, r.Refs)
				}
				for ref, o := range r.Refs {
					if o.Outcome != op || o.CI == "" {
						return fmt.Errorf("receipt %d: item %s %+v, want %s with its CI", i, ref, o, op)
					}
				}
			}
			return nil
		})
	})
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// 50 payloads describing one new device, published concurrently by 5 publishers through
// the stream to two replicas: exactly one CI.
func TestConcurrentPublishersMakeOneCI(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		h := newHub(t, true)
		cfg := testConfig(b)
		h.start(t, cfg)
		h.start(t, cfg) // a second replica on the same database
		var wg sync.WaitGroup
		for g := range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, js := h.conn(t, fmt.Sprintf("publisher-%d", g))
				pub := bus.NewPublisher(js, envelope.ServiceSource("discovery"), nil)
				for i := range 10 {
					var p envelope.CIPayload
					if i%2 == 0 {
						p = discovered("SN-RACE", []string{"02:00:00:00:03:01", "02:00:00:00:03:02"}, nil)
					} else {
						p = discovered("SN-RACE", nil, nil) // serial only: same partition, fewer items
					}
					p.Observed = now.Add(time.Duration(g*10+i) * time.Millisecond)
					if _, err := pub.Publish(context.Background(), cmdb.IngestSubject(p, cfg.Partitions), envelope.Meta{}, &p); err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		h.drained(t, 60*time.Second)
		c := counts(t, h.nc)
		want := map[string]int64{"linux_server": 1, "network_adapter": 2, "ip_address": 1, "web_server": 1}
		for class, n := range want {
			if c.Exact[class] != n {
				t.Errorf("%s: %d CIs, want %d (all: %v)", class, c.Exact[class], n, c.Exact)
			}
		}
		if len(h.msgs(t, bus.StreamDLQ)) != 0 {
			t.Error("a payload was dead-lettered")
		}
		created := 0
		for _, e := range h.changes(t) {
			if e.Op == cmdb.OpCreated && e.Class == "linux_server" {
				created++
			}
		}
		if created != 1 {
			t.Errorf("%d created events for the host, want 1", created)
		}
	})
}

// One server seen by discovery (serial + MACs, through the stream) and by an import
// (serial only, other attributes, through svc.cmdb.ingest): one CI, attributes by
// precedence, both sources in its history.
func TestDiscoveryAndImportMakeOneCI(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		h := newHub(t, true)
		h.start(t, testConfig(b))
		disc := discovered("SN-0001", []string{"00:50:56:aa:00:01", "00-50-56-AA-00-02"}, nil)
		h.publish(t, disc)
		h.drained(t, 30*time.Second)

		imported := envelope.CIPayload{Source: "import", Observed: now.Add(time.Minute), Items: []envelope.CIItem{{
			Ref: "row-17", Class: "server", NativeKey: "17",
			Attributes: attrs("serial_number", " sn-0001 ", "name", "WEB01.corp", "ram_mb", 8192, "asset_tag", "A-100", "location", "Paris"),
		}}}
		out := call[cmdb.IngestResponse](t, h.nc, cmdb.OpIngest, cmdb.IngestRequest{Payload: imported})
		if len(out.Created) != 0 || len(out.Updated) != 1 || len(out.Conflicts) != 0 {
			t.Fatalf("import outcome %+v: want the discovered server updated", out)
		}

		hw := listAll(t, h.nc, cmdb.ListRequest{Class: "hardware"})
		if len(hw) != 1 {
			t.Fatalf("%d hardware CIs, want 1: %+v", len(hw), hw)
		}
		ci := call[cmdb.GetResponse](t, h.nc, cmdb.OpGet, cmdb.IDRequest{ID: hw[0].ID})
		want := map[string]struct{ value, source string }{
			"name":          {"web01", "discovery"}, // discovery > import
			"ram_mb":        {"4096", "discovery"},
			"asset_tag":     {"A-100", "import"}, // only the import knows it
			"location":      {"Paris", "import"},
			"serial_number": {"SN-0001", "discovery"},
		}
		for a, w := range want {
			if got := str(ci.Attributes[a]); got != w.value || ci.Sources[a].Source != w.source {
				t.Errorf("%s = %q from %s, want %q from %s", a, got, ci.Sources[a].Source, w.value, w.source)
			}
		}
		if ci.Class != "linux_server" {
			t.Errorf("class %s, want linux_server", ci.Class)
		}
		var sources []string
		for _, e := range ci.History {
			if !slices.Contains(sources, e.Source) {
				sources = append(sources, e.Source)
			}
		}
		slices.Sort(sources)
		if !slices.Equal(sources, []string{"discovery", "import"}) {
			t.Errorf("history sources %v, want discovery and import", sources)
		}

		// A manual edit outranks both; a later import does not take it back.
		manual := envelope.CIPayload{Source: "manual", Observed: now.Add(2 * time.Minute), Items: []envelope.CIItem{{
			Ref: "h", Class: "server", Attributes: attrs("serial_number", "SN-0001", "location", "Lyon")}}}
		call[cmdb.IngestResponse](t, h.nc, cmdb.OpIngest, cmdb.IngestRequest{Payload: manual})
		imported.Observed = now.Add(3 * time.Minute)
		imported.Items[0].Attributes["location"] = "Berlin"
		call[cmdb.IngestResponse](t, h.nc, cmdb.OpIngest, cmdb.IngestRequest{Payload: imported})
		ci = call[cmdb.GetResponse](t, h.nc, cmdb.OpGet, cmdb.IDRequest{ID: hw[0].ID})
		if got := str(ci.Attributes["location"]); got != "Lyon" || ci.Sources["location"].Source != "manual" {
			t.Errorf("location %q from %s, want Lyon from manual", got, ci.Sources["location"].Source)
		}
		// Changes were announced for both paths, the stream's and the endpoint's.
		eventually(t, 10*time.Second, func() error {
			ops := map[string]int{}
			for _, e := range h.changes(t) {
				if e.CI == hw[0].ID {
					ops[e.Op+"/"+e.Source]++
				}
			}
			if ops["created/discovery"] != 1 || ops["updated/import"] != 1 || ops["updated/manual"] != 1 {
				return fmt.Errorf("change events of the server: %v", ops)
			}
			return nil
		})
	})
}

// Run works on a bare server: it creates the stream, the consumers and the lease bucket
// it needs. Stale CIs are flagged by one replica per round, announced, and never deleted.
func TestStandaloneAndStaleMarking(t *testing.T) {
	h := newHub(t, false)
	// the services' clock is the test's: a round of marking happens when the test advances it
	fake := clock.NewFake(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	h.clock = fake
	cfg := testConfig(sqliteBackend(t))
	cfg.StaleAfter = time.Hour
	cfg.StaleEvery = 100 * time.Millisecond
	h.start(t, cfg)
	h.start(t, cfg)

	old := discovered("SN-OLD", nil, attrs("name", "old"))
	old.Observed = fake.Now().Add(-2 * time.Hour)
	fresh := discovered("SN-FRESH", nil, attrs("name", "fresh"))
	fresh.Observed = fake.Now()
	h.publish(t, old)
	h.publish(t, fresh)
	h.drained(t, 30*time.Second)

	find := func(name string) store.CI {
		items := listAll(t, h.nc, cmdb.ListRequest{Class: "hardware", Search: name})
		if len(items) != 1 {
			t.Fatalf("search %q: %d CIs, want 1", name, len(items))
		}
		return items[0]
	}
	oldID := find("old").ID
	eventually(t, 30*time.Second, func() error {
		fake.Advance(cfg.StaleEvery) // the next round (its lease expires in real time)
		stale := true
		if items := listAll(t, h.nc, cmdb.ListRequest{Stale: &stale}); len(items) != 2 || !slices.ContainsFunc(items, func(c store.CI) bool { return c.ID == oldID }) {
			return fmt.Errorf("stale CIs: %d, want the old host and its web server", len(items))
		}
		return nil
	})
	if find("fresh").Stale {
		t.Error("a CI seen now was marked stale")
	}
	hist := call[cmdb.HistoryResponse](t, h.nc, cmdb.OpHistory, cmdb.HistoryRequest{ID: oldID})
	n := 0
	for _, e := range hist.Items {
		if e.Attr == "stale" {
			n++
			if e.Source != ire.StaleSource {
				t.Errorf("stale history entry from %q, want %q", e.Source, ire.StaleSource)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d stale history entries, want 1 (one replica per round)", n)
	}
	eventually(t, 10*time.Second, func() error {
		for _, e := range h.changes(t) {
			if e.CI == oldID && e.Op == cmdb.OpStale {
				return nil
			}
		}
		return fmt.Errorf("no stale change event for %s", oldID)
	})

	// Seen again: no longer stale.
	old.Observed = fake.Now()
	h.publish(t, old)
	h.drained(t, 30*time.Second)
	if find("old").Stale {
		t.Error("a stale CI seen again is still stale")
	}
}
