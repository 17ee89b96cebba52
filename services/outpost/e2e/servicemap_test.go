package e2e

// Service Mapping end to end: the real `outpost up` and a real `outpost-bridge` map every
// application service of a lab plan from its entry point, through the bridge's ssh_exec
// probes to the lab's hosts, and the maps are checked against the lab's manifest. Then the
// maps are kept current: an unchanged service mapped again changes nothing, a database
// moved while the lab runs changes exactly one edge (seen in the service CI's history and
// as a change event), and a hub killed mid-map resumes the mapping by itself.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/lab"
)

// mapService maps a declared service (first map, or anew with remap) and returns it.
func (h *testHub) mapService(t testing.TB, name string, remap bool) api.Detail {
	t.Helper()
	path := "/api/v1/services/" + name + "/map?wait=true"
	if remap {
		path = "/api/v1/services/" + name + "/remap"
	}
	var d api.Detail
	h.mustAPI(t, "POST", path, nil, &d)
	if d.Map == nil || d.Service.State != api.ServiceMapped {
		t.Fatalf("%s: no map (state %s: %s)", name, d.Service.State, d.Service.Error)
	}
	return d
}

func (h *testHub) ciHistory(t testing.TB, id string) []cmdbapi.HistoryEntry {
	t.Helper()
	var out cmdbapi.HistoryResponse
	h.mustAPI(t, "GET", "/api/v1/cis/"+id+"/history?limit=500", nil, &out)
	return out.Items
}

// changeEvents are the CMDB's change events of a class so far.
func changeEvents(t testing.TB, js jetstream.JetStream, class string) []envelope.Change {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, bus.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.ChangeSubject(class)}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []envelope.Change
	for pending := info.NumPending; pending > 0; {
		batch, err := c.Fetch(int(pending), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			var ch envelope.Change
			if err := json.Unmarshal(m.Data(), &ch); err != nil {
				t.Fatalf("change event: %v: %s", err, m.Data())
			}
			out = append(out, ch)
			n++
		}
		if n == 0 {
			t.Fatalf("change events: %d pending, none fetched", pending)
		}
		pending -= uint64(n)
	}
	return out
}

func TestServiceMapOfTheLab(t *testing.T) {
	t.Parallel()
	const cidr = "127.77.182.0/24"
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 80, Seed: 7})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	defer l.Close()
	m := l.Manifest()
	if len(m.AppServices) < 3 {
		t.Fatalf("the lab plan has %d app services, want at least 3", len(m.AppServices))
	}

	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "sm", cidr, true)
	startBridge(t, h, "sm", "br1", tok)
	h.waitStatus(t, "br1", "up")
	for _, lc := range m.StoreCredentials("sm") {
		h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": lc.Name, "type": lc.Type, "site": "sm",
			"username": lc.Username, "secret": lc.Secret, "fields": lc.Fields}, nil)
	}
	_, js := h.serviceConn(t)

	// every service mapped holds every edge of the manifest, with its hosts and CIs
	maps := map[string]api.Detail{}
	dbUsers := map[string][]string{}
	for _, s := range m.AppServices {
		h.mustAPI(t, "POST", "/api/v1/services", map[string]any{"name": s.Name, "entry": s.Entry}, nil)
		d := h.mapService(t, s.Name, false)
		maps[s.Name] = d
		nodes := map[string]api.Node{}
		for _, n := range d.Map.Nodes {
			nodes[n.ID] = n
		}
		edges := map[[2]string]api.Edge{}
		for _, e := range d.Map.Edges {
			edges[[2]string{e.From, e.To}] = e
		}
		if entry := strings.TrimSuffix(strings.TrimPrefix(s.Entry, "http://"), "/"); d.Map.Root != entry {
			t.Errorf("%s: root %s, entry %s", s.Name, d.Map.Root, entry)
		}
		for i, me := range s.Edges {
			e, ok := edges[[2]string{me.From, me.To}]
			if !ok {
				t.Errorf("%s: manifest edge %s → %s not in the map %+v", s.Name, me.From, me.To, d.Map.Edges)
				continue
			}
			to := nodes[me.To]
			if me.Dead {
				if !e.Dead || to.State != api.StateUnreachable {
					t.Errorf("%s: dead backend %s: edge dead=%v, node %s (%s); want unreachable, kept in the map", s.Name, me.To, e.Dead, to.State, to.Reason)
				}
				continue
			}
			if e.Dead || to.State != api.StateOK || to.CIID == "" || to.HostCIID == "" {
				t.Errorf("%s: edge %s → %s: dead=%v, node %+v; want a live node with its CI running on its host's", s.Name, me.From, me.To, e.Dead, to)
			}
			// the web tier names its backend by address and holds a connection to it; the
			// application names its database by FQDN and holds a connection to it
			if e.FoundBy != api.FoundBoth {
				t.Errorf("%s: edge %s → %s found by %s, want both (connection and configuration)", s.Name, me.From, me.To, e.FoundBy)
			}
			want := map[int]string{0: "web_server", 1: "app_server"}[i]
			if from := nodes[me.From]; want != "" && from.Class != want {
				t.Errorf("%s: %s is %q (%s), want %s", s.Name, me.From, from.Class, from.Application, want)
			}
			if i == 1 {
				if to.Class != "database" {
					t.Errorf("%s: the database %s is %q", s.Name, me.To, to.Class)
				}
				dbUsers[me.To] = append(dbUsers[me.To], s.Name)
			}
		}
		// the service CI contains the applications; each depends_on the next tier
		var rel cmdbapi.RelResponse
		h.mustAPI(t, "GET", "/api/v1/cis/"+d.Service.CIID+"/relations", nil, &rel)
		contains := map[string]bool{}
		for _, r := range rel.Outgoing {
			if r.Type == "contains" {
				contains[r.Peer.ID] = true
			}
		}
		for _, me := range s.Edges {
			if n := nodes[me.To]; !me.Dead && !contains[n.CIID] {
				t.Errorf("%s: the service CI does not contain %s (%s)", s.Name, me.To, n.CIID)
			}
		}
		var from cmdbapi.RelResponse
		h.mustAPI(t, "GET", "/api/v1/cis/"+nodes[s.Edges[0].To].CIID+"/relations", nil, &from)
		deps, runsOn := false, false
		for _, r := range from.Outgoing {
			deps = deps || r.Type == "depends_on" && r.Peer.ID == nodes[s.Edges[1].To].CIID
			runsOn = runsOn || r.Type == "runs_on" && r.Peer.ID == nodes[s.Edges[0].To].HostCIID
		}
		if !deps || !runsOn {
			t.Errorf("%s: the application CI's relations %+v: depends_on its database %v, runs_on its host %v", s.Name, from.Outgoing, deps, runsOn)
		}
	}
	shared := false
	for _, users := range dbUsers {
		shared = shared || len(users) >= 2
	}
	if !shared {
		t.Errorf("no database in two services' maps: %v", dbUsers)
	}
	t.Logf("%d services mapped; databases and their services: %v", len(maps), dbUsers)
	if t.Failed() {
		t.FailNow()
	}

	// an unchanged service mapped again: the same map, nothing changed in the CMDB
	first := m.AppServices[0]
	d0 := maps[first.Name]
	hist0 := len(h.ciHistory(t, d0.Service.CIID))
	// every service CI's creation event is out of the CMDB's outbox before counting
	eventually(t, 30*time.Second, func() error {
		if n := len(changeEvents(t, js, "application_service")); n < len(m.AppServices) {
			return fmt.Errorf("%d application_service change events, want one per service (%d)", n, len(m.AppServices))
		}
		return nil
	})
	events0 := len(changeEvents(t, js, "application_service"))
	d1 := h.mapService(t, first.Name, true)
	if d1.Map.Version != d0.Map.Version+1 || len(d1.Map.Changes) != 0 {
		t.Errorf("second map: version %d (first %d), changes %+v; want the next version and no change", d1.Map.Version, d0.Map.Version, d1.Map.Changes)
	}
	if c := d1.Map.CMDB; c.Created != 0 || c.Updated != 0 || c.Unchanged == 0 {
		t.Errorf("second map of an unchanged service: CMDB %+v, want only unchanged CIs", c)
	}
	if n := len(h.ciHistory(t, d0.Service.CIID)); n != hist0 {
		t.Errorf("the service CI's history grew from %d to %d entries on an unchanged map", hist0, n)
	}
	if n := len(changeEvents(t, js, "application_service")); n != events0 {
		t.Errorf("%d application_service change events after an unchanged map, %d before", n, events0)
	}

	// the database moves: exactly one edge changes, in the map, the history and the events
	oldDB := first.Edges[1].To
	newDB, err := l.MoveDatabase(first.Name)
	if err != nil {
		t.Fatal(err)
	}
	d2 := h.mapService(t, first.Name, true)
	if ch := d2.Map.Changes; len(ch) != 1 || ch[0].Change != "moved" || ch[0].Edge.From != first.Edges[1].From || ch[0].Edge.To != newDB ||
		ch[0].Previous == nil || ch[0].Previous.To != oldDB {
		t.Errorf("after the move %s → %s: changes %+v, want one moved edge", oldDB, newDB, d2.Map.Changes)
	}
	if len(d2.Map.Edges) != len(d1.Map.Edges) {
		t.Errorf("edges %d after the move, %d before", len(d2.Map.Edges), len(d1.Map.Edges))
	}
	hist := h.ciHistory(t, d0.Service.CIID)
	if len(hist) != hist0+1 || hist[0].Attr != "edges" || !strings.Contains(string(hist[0].Old), oldDB) || !strings.Contains(string(hist[0].New), newDB) ||
		strings.Contains(string(hist[0].New), oldDB) {
		t.Errorf("service CI history after the move: %d entries (was %d), newest %+v; want one edges entry from %s to %s", len(hist), hist0, hist[0], oldDB, newDB)
	}
	// change events leave the CMDB's outbox after its commit: wait for the one of the move
	eventually(t, 30*time.Second, func() error {
		evs := changeEvents(t, js, "application_service")
		if len(evs) != events0+1 || evs[len(evs)-1].CI != d0.Service.CIID || evs[len(evs)-1].Op != "updated" {
			return fmt.Errorf("application_service change events after the move: %d (was %d), last %+v; want one update of %s", len(evs), events0, evs[len(evs)-1], d0.Service.CIID)
		}
		return nil
	})

	// the hub killed mid-map: the restarted hub maps the service again by itself
	webIP, _, _ := net.SplitHostPort(first.Edges[0].From)
	before := l.Execs(webIP, "hostname")
	if err := l.SetExecDelay(webIP, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	go func() {
		// the kill cuts this request: its answer does not matter, the map does
		req, _ := http.NewRequest("POST", "http://"+h.http+"/api/v1/services/"+first.Name+"/remap", nil)
		req.Header.Set("Authorization", "Bearer "+h.token(t))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	eventually(t, 60*time.Second, func() error {
		if now, _ := l.ExecConcurrency(); now == 0 {
			return fmt.Errorf("the mapping has not reached the entry host yet")
		}
		return nil
	})
	_ = h.proc.cmd.Process.Signal(syscall.SIGKILL)
	_, _ = h.proc.cmd.Process.Wait()
	_ = l.SetExecDelay(webIP, 0)
	h.restart(t)
	eventually(t, 90*time.Second, func() error {
		var d api.Detail
		h.mustAPI(t, "GET", "/api/v1/services/"+first.Name, nil, &d)
		if d.Map == nil || d.Map.Version != d2.Map.Version+1 || d.Service.State != api.ServiceMapped {
			return fmt.Errorf("service %s: state %s (error %q), map version %v (before the kill %d)", first.Name, d.Service.State, d.Service.Error, d.Map != nil && d.Map.Version > 0, d2.Map.Version)
		}
		if len(d.Map.Changes) != 0 {
			return fmt.Errorf("the resumed map changed %+v", d.Map.Changes)
		}
		return nil
	})
	t.Logf("moved %s → %s; the entry host was probed %d times across the kill", oldDB, newDB, l.Execs(webIP, "hostname")-before)
	if n := l.Execs(webIP, "hostname"); n < before+2 {
		t.Errorf("the entry host was probed %d times across the kill, want the interrupted mapping and the resumed one", n-before)
	}
}
