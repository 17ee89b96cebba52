package correlation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/lease"
)

// Topology grouping. Alerts bound to CIs that the CMDB relates (runs_on, depends_on,
// connected_to, contains), first seen within the window of each other, are one incident:
// a switch going down and the devices behind it failing a few seconds later make one
// group whose probable root cause is the switch.
//
// Time groups live in partitions by group key, and related CIs' alerts are in any
// partition, so topology is not a partition stage: one replica (lease
// correlation.topology) watches the alerts bucket, keeps the open alerts that have a CI,
// links them through the CMDB's relations (cached) and writes the groups to
// correlation_topology. Every replica watches that bucket: the API shows an alert's
// topology group and root cause, and a partition's notification leaves out the alerts
// whose root cause is in another group — they are listed with it as correlated — while the
// root cause's notification names them. A new holder recomputes everything from the
// alerts bucket: nothing is lost with the replica that held it.
const (
	KVTopology       = "correlation_topology"
	topologyLeaseKey = "correlation.topology"
)

// relationsTTL bounds how long a CI's relations are taken as known: the groups are
// recomputed at least this often while alerts are open, so relations the CMDB learns
// after the alerts came (a discovery still ingesting) join their groups.
const relationsTTL = 10 * time.Second

// topologist is the lease holder's side: alerts in, groups out.
type topologist struct {
	s    *service
	kv   jetstream.KeyValue
	rels *relCache
}

// topoRef is an alert's place in a topology group (every replica's view).
type topoRef struct{ group, root string }

// relCache remembers each CI's relations for a while: an alert storm on a hundred CIs costs
// a hundred lookups, not one per write.
type relCache struct {
	nc    *nats.Conn
	clock clock.Clock
	ttl   time.Duration
	wait  time.Duration

	mu    sync.Mutex
	known map[string]relEntry
}

type relEntry struct {
	rels  []cmdb.Relation
	until time.Time
}

func (c *relCache) get(ctx context.Context, ci string) []cmdb.Relation {
	now := c.clock.Now()
	c.mu.Lock()
	e, ok := c.known[ci]
	c.mu.Unlock()
	if ok && now.Before(e.until) {
		return e.rels
	}
	rctx, cancel := context.WithTimeout(ctx, c.wait)
	resp, err := cmdb.Rel.Call(rctx, c.nc, cmdb.IDRequest{ID: ci})
	cancel()
	e = relEntry{until: now.Add(c.ttl)}
	if err != nil {
		// Not cached for long: the CMDB may be starting; a group formed without it is
		// formed again at the next change once it answers.
		e.until = now.Add(5 * time.Second)
	} else {
		e.rels = append(append(e.rels, resp.Outgoing...), resp.Incoming...)
	}
	c.mu.Lock()
	if len(c.known) > 100_000 {
		c.known = map[string]relEntry{}
	}
	c.known[ci] = e
	c.mu.Unlock()
	return e.rels
}

func newTopologist(s *service, kv jetstream.KeyValue) *topologist {
	return &topologist{s: s, kv: kv, rels: &relCache{nc: s.deps.NC, clock: s.clock, ttl: min(s.cfg.CMDBCacheTTL, relationsTTL),
		wait: s.cfg.CMDBTimeout, known: map[string]relEntry{}}}
}

// on: topology needs CIs (CMDB lookup) and relations to read.
func (t *topologist) on() bool {
	return t.s.cfg.CMDBLookup && len(t.s.rules.topology.Relations) > 0
}

// run holds the topology lease whenever it can and computes groups while it does.
func (t *topologist) run(ctx context.Context) {
	if !t.on() {
		return
	}
	l := lease.New(lease.Config{JS: t.s.deps.JS, KV: t.s.kvLse, Key: topologyLeaseKey, Holder: t.s.cfg.Replica, TTL: t.s.cfg.ActiveLease,
		Clock: clock.Real(), Logger: t.s.log.With("stage", "topology"), Name: Service + " topology"})
	for ctx.Err() == nil {
		if err := l.Serve(ctx, t.serve, nil); err != nil && ctx.Err() == nil {
			t.s.log.Error("topology grouping failed; retrying", "err", err)
			sleepReal(ctx, t.s.cfg.ActiveLease/4)
		}
	}
}

// serve follows the alerts bucket and rewrites the groups when the set of open alerts
// with a CI changes (not at every count: a storm on one alert costs nothing here).
func (t *topologist) serve(ctx context.Context) error {
	w, err := t.s.store.kv.Watch(ctx, "a.>")
	if err != nil {
		return fmt.Errorf("watch alerts: %w", err)
	}
	defer func() { _ = w.Stop() }()
	written := map[string]api.TopologyGroup{}
	if keys, err := t.kv.ListKeys(ctx); err == nil {
		for k := range keys.Keys() {
			written[k] = api.TopologyGroup{}
		}
	}
	open := map[string]api.Alert{}
	dirty, loaded := false, false
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	refresh := time.NewTicker(relationsTTL)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("alerts watch ended")
			}
			if e == nil {
				loaded, dirty = true, true
				continue
			}
			slot := strings.TrimPrefix(e.Key(), "a.")
			var a api.Alert
			if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &a) != nil || a.State == api.StateClosed || a.CI == "" {
				if _, was := open[slot]; was {
					delete(open, slot)
					dirty = true
				}
				continue
			}
			if old, was := open[slot]; !was || old.ID != a.ID || old.CI != a.CI {
				dirty = true
			}
			open[slot] = a
		case <-refresh.C:
			dirty = dirty || len(open) > 0
		case <-tick.C:
			if !dirty || !loaded {
				continue
			}
			groups := t.compute(ctx, open)
			if err := t.write(ctx, written, groups); err != nil {
				t.s.log.Warn("topology groups not written; retrying", "err", err)
				continue
			}
			dirty = false
		}
	}
}

// depends tells, for a relation from → to of type typ, which end depends on which: the
// target of runs_on and depends_on carries its source, a container its content; a
// connected_to link counts for both ends (the end with the most links is the hub, a
// switch rather than each host on it).
func dependents(typ, from, to string) (cause, follower []string) {
	switch typ {
	case "runs_on", "depends_on":
		return []string{to}, []string{from}
	case "contains":
		return []string{from}, []string{to}
	default:
		return []string{from, to}, []string{to, from}
	}
}

// compute links the open alerts into groups (union-find over alerts, joined by a relation
// of their CIs within the window, or by sharing a CI) and picks each group's root cause.
func (t *topologist) compute(ctx context.Context, open map[string]api.Alert) map[string]api.TopologyGroup {
	topo := t.s.rules.topology
	byCI := map[string][]api.Alert{}
	for _, a := range open {
		byCI[a.CI] = append(byCI[a.CI], a)
	}
	if len(byCI) < 2 {
		return nil
	}
	parent := map[string]string{}
	var find func(string) string
	find = func(x string) string {
		if p, ok := parent[x]; ok && p != x {
			r := find(p)
			parent[x] = r
			return r
		}
		parent[x] = x
		return x
	}
	union := func(a, b string) { parent[find(a)] = find(b) }
	near := func(a, b api.Alert) bool { return absDur(a.FirstSeen.Sub(b.FirstSeen)) <= topo.Window }
	type link struct{ typ, from, to string }
	links := map[link]bool{}
	cis := make([]string, 0, len(byCI))
	for ci := range byCI {
		cis = append(cis, ci)
	}
	sort.Strings(cis)
	for _, ci := range cis {
		as := byCI[ci]
		for i := range as {
			for j := i + 1; j < len(as); j++ {
				if near(as[i], as[j]) {
					union(as[i].ID, as[j].ID)
				}
			}
		}
		for _, r := range t.rels.get(ctx, ci) {
			if !slices.Contains(topo.Relations, r.Type) {
				continue
			}
			peer := r.To
			if peer == ci {
				peer = r.From
			}
			for _, a := range as {
				for _, b := range byCI[peer] {
					if near(a, b) {
						union(a.ID, b.ID)
						links[link{r.Type, r.From, r.To}] = true
					}
				}
			}
		}
	}
	members := map[string][]api.Alert{}
	for _, a := range open {
		root := find(a.ID)
		members[root] = append(members[root], a)
	}
	now := t.s.clock.Now().UTC()
	out := map[string]api.TopologyGroup{}
	for _, as := range members {
		ciSet := map[string]bool{}
		for _, a := range as {
			ciSet[a.CI] = true
		}
		if len(ciSet) < 2 {
			continue // one CI's alerts: its own time group says it all
		}
		sort.Slice(as, func(i, j int) bool {
			if !as[i].FirstSeen.Equal(as[j].FirstSeen) {
				return as[i].FirstSeen.Before(as[j].FirstSeen)
			}
			return as[i].ID < as[j].ID
		})
		// score: the CIs of the group that follow from each CI
		followers := map[string]map[string]bool{}
		g := api.TopologyGroup{ID: "t-" + as[0].ID, Updated: now, Alerts: []string{}, CIs: []string{}, Links: []api.TopologyLink{}}
		for l := range links {
			if !ciSet[l.from] || !ciSet[l.to] {
				continue
			}
			g.Links = append(g.Links, api.TopologyLink{Type: l.typ, From: l.from, To: l.to})
			causes, fol := dependents(l.typ, l.from, l.to)
			for i, c := range causes {
				if followers[c] == nil {
					followers[c] = map[string]bool{}
				}
				followers[c][fol[i]] = true
			}
		}
		sort.Slice(g.Links, func(i, j int) bool {
			return g.Links[i].From+g.Links[i].To+g.Links[i].Type < g.Links[j].From+g.Links[j].To+g.Links[j].Type
		})
		best := -1
		for _, a := range as { // earliest first: ties go to the earliest alert
			g.Alerts = append(g.Alerts, a.ID)
			if n := len(followers[a.CI]); n > best {
				best, g.RootCause, g.RootCI, g.RootNode = n, a.ID, a.CI, a.Node
			}
		}
		for ci := range ciSet {
			g.CIs = append(g.CIs, ci)
		}
		sort.Strings(g.CIs)
		out[g.ID] = g
	}
	return out
}

// write makes the bucket hold groups: changed ones put, gone ones deleted.
func (t *topologist) write(ctx context.Context, written, groups map[string]api.TopologyGroup) error {
	var errs []error
	for id, g := range groups {
		if old, ok := written[id]; ok && sameGroup(old, g) {
			continue
		}
		b, _ := json.Marshal(g)
		if _, err := t.kv.Put(ctx, id, b); err != nil {
			errs = append(errs, err)
			continue
		}
		written[id] = g
	}
	for id := range written {
		if _, ok := groups[id]; ok {
			continue
		}
		if err := t.kv.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			errs = append(errs, err)
			continue
		}
		delete(written, id)
	}
	return errors.Join(errs...)
}

func sameGroup(a, b api.TopologyGroup) bool {
	return a.RootCause == b.RootCause && slices.Equal(a.Alerts, b.Alerts) && slices.Equal(a.CIs, b.CIs) && slices.Equal(a.Links, b.Links)
}

// watchTopology keeps every replica's view of the topology groups current.
func (s *service) watchTopology(ctx context.Context) error {
	w, err := s.kvTopo.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("correlation: watch topology groups: %w", err)
	}
	loaded := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(loaded)
					}
					continue
				}
				s.topoMu.Lock()
				if old, ok := s.topoGroups[e.Key()]; ok {
					for _, id := range old.Alerts {
						if s.topoOf[id].group == old.ID {
							delete(s.topoOf, id)
						}
					}
					delete(s.topoGroups, e.Key())
				}
				var g api.TopologyGroup
				if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &g) == nil {
					s.topoGroups[e.Key()] = g
					for _, id := range g.Alerts {
						s.topoOf[id] = topoRef{group: g.ID, root: g.RootCause}
					}
				}
				s.topoMu.Unlock()
			}
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// topologyOf is the topology group of an alert, if any.
func (s *service) topologyOf(id string) (topoRef, bool) {
	s.topoMu.RLock()
	defer s.topoMu.RUnlock()
	r, ok := s.topoOf[id]
	return r, ok
}

// topologyGroups are the current groups, ordered by id.
func (s *service) topologyGroups() []api.TopologyGroup {
	s.topoMu.RLock()
	defer s.topoMu.RUnlock()
	out := make([]api.TopologyGroup, 0, len(s.topoGroups))
	for _, g := range s.topoGroups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// topologyGroup is one group (zero when it is gone).
func (s *service) topologyGroup(id string) api.TopologyGroup {
	s.topoMu.RLock()
	defer s.topoMu.RUnlock()
	return s.topoGroups[id]
}

// slotOfIDOr is the slot of an alert id, or the id itself when it has none.
func slotOfIDOr(id string) string {
	if slot, ok := slotOfID(id); ok {
		return slot
	}
	return id
}
