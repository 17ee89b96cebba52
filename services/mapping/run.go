package mapping

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	api "github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/libs/probes/sshexec"
)

// availWait is how long a mapping waits for the hub services it asks (agents, discovery) to
// answer: a hub that restarts resumes its mappings before they do (bus.WhenAvailable).
const availWait = 2 * time.Minute

// inProgress returns the channel closed when the service's running mapping ends, or nil.
func (s *service) inProgress(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[name]
}

// startMapping maps a service in the background, once at a time per service; the channel
// is closed when the mapping ends (a mapping already running here is joined, one running on
// another live replica is waited for, not doubled). The run is recorded in KVRuns first, so
// a replica that dies mid-map leaves it to be resumed (runs.go).
func (s *service) startMapping(name, reason string) chan struct{} {
	s.mu.Lock()
	if done, ok := s.running[name]; ok {
		s.mu.Unlock()
		return done
	}
	done := make(chan struct{})
	s.running[name] = done
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.running, name)
			s.mu.Unlock()
			close(done)
		}()
		// A mapping outlives the request that started it (the next caller finds its map),
		// not the service: its context is the service's.
		mctx, cancel := context.WithTimeout(s.life, 30*time.Minute)
		defer cancel()
		rec, rev, err := s.claimRun(mctx, name, reason)
		if errors.Is(err, errMappedElsewhere) {
			s.awaitRun(mctx, name)
			return
		}
		if err != nil {
			s.log.Warn("mapping not started", "service", name, "err", err)
			return
		}
		bctx, stop := context.WithCancel(mctx)
		beating := make(chan struct{})
		go func() { defer close(beating); s.beat(bctx, cancel, rec, rev) }()
		err = s.mapService(mctx, name)
		stop()
		<-beating // no heartbeat may land after the record is deleted
		if err != nil {
			s.log.Warn("mapping failed", "service", name, "run", rec.ID, "err", err)
		}
		if s.life.Err() != nil {
			// the service stops mid-map: the record stays, the next start (or another
			// replica) maps it again
			return
		}
		s.endRun(context.WithoutCancel(mctx), name)
	}()
	return done
}

// awaitRun waits until another replica's run of the service ends (its record is gone) or
// stops beating (the scheduler resumes it).
func (s *service) awaitRun(mctx context.Context, name string) {
	for {
		select {
		case <-mctx.Done():
			return
		case <-s.clock.After(500 * time.Millisecond):
		}
		r, _, err := s.getRun(mctx, name)
		if err != nil || r == nil || s.stale(r) {
			return
		}
	}
}

// mapService maps one service, stores the map and sends it to the CMDB.
func (s *service) mapService(ctx context.Context, name string) error {
	a, err := s.get(ctx, name)
	if err != nil {
		return err
	}
	a.State, a.Error = api.ServiceMapping, ""
	_ = s.put(ctx, a)
	m, err := s.mapOnce(ctx, a)
	now := s.now()
	if every, perr := time.ParseDuration(a.Every); perr == nil && every > 0 {
		a.NextMap = now.Add(every)
	}
	if err != nil {
		a.State, a.Error = api.ServiceFailed, err.Error()
		return errors.Join(err, s.put(ctx, a))
	}
	a.State, a.Mapped, a.Version = api.ServiceMapped, m.Mapped, m.Version
	a.Nodes, a.Edges, a.Unhealthy = len(m.Nodes), len(m.Edges), 0
	for _, n := range m.Nodes {
		if n.State == api.StateUnreachable {
			a.Unhealthy++
		}
	}
	if m.serviceCI != "" {
		a.CIID = m.serviceCI
	}
	b, err := json.Marshal(m.Map)
	if err != nil {
		return err
	}
	if _, err := s.kvMaps.Put(ctx, name, b); err != nil {
		return fmt.Errorf("store the map: %w", err)
	}
	return s.put(ctx, a)
}

// mapped is a map with what the service keeps beside it.
type mapped struct {
	api.Map
	serviceCI string
}

func (s *service) mapOnce(ctx context.Context, a api.AppService) (*mapped, error) {
	sites, err := bus.WhenAvailable(ctx, availWait, s.sites)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(sites, func(st agentsapi.Site) bool { return st.Name == a.Site })
	if i < 0 {
		return nil, fmt.Errorf("site %s no longer exists", a.Site)
	}
	var ranges []netip.Prefix
	for _, r := range sites[i].Ranges {
		if p, err := netip.ParsePrefix(r); err == nil {
			ranges = append(ranges, p.Masked())
		} else if ip, err := netip.ParseAddr(r); err == nil {
			ranges = append(ranges, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	var prober Prober
	if s.deps.Prober != nil {
		prober = s.deps.Prober(a.Site)
	} else {
		creds, err := bus.WhenAvailable(ctx, availWait, func(ctx context.Context) ([]string, error) { return s.sshCredentials(ctx, a.Site) })
		if err != nil {
			return nil, err
		}
		if len(creds) == 0 {
			return nil, fmt.Errorf("site %s has no ssh credential to log in to its hosts (`outpost credentials add --type ssh --site %s`)", a.Site, a.Site)
		}
		prober = &bridgeProber{nc: s.deps, site: a.Site, creds: creds, timeout: s.cfg.ProbeTimeout}
	}
	entry := netip.AddrPortFrom(netip.MustParseAddr(a.Host), uint16(a.Port))
	t := &traversal{prober: prober, patterns: s.patterns, ranges: ranges,
		lim: Limits{Depth: a.Depth, MaxNodes: s.cfg.MaxNodes, Parallel: s.cfg.Parallel}}
	root, nodes, edges := t.run(ctx, entry)
	prev, err := s.latestMap(ctx, a.Name)
	if err != nil {
		return nil, err
	}
	m := &mapped{Map: api.Map{Service: a.Name, Entry: a.Entry, Site: a.Site, Version: 1, Mapped: s.now(), Root: root,
		Nodes: nodes, Edges: edges, Changes: []api.EdgeChange{}, Probes: t.probes, Warnings: append([]string{}, t.warnings...)}}
	if prev != nil {
		m.Version = prev.Version + 1
		m.Changes = diffEdges(prev.Edges, edges)
	}
	if root := nodes[0]; root.State != api.StateOK {
		m.Warnings = append(m.Warnings, fmt.Sprintf("the entry %s is %s: %s", root.ID, root.State, root.Reason))
	}
	if err := s.toCMDB(ctx, a, m, t); err != nil {
		m.Warnings = append(m.Warnings, "CMDB: "+err.Error())
	}
	return m, nil
}

// diffEdges lists what changed between two maps' edges.
func diffEdges(old, cur []api.Edge) []api.EdgeChange {
	key := func(e api.Edge) string { return e.From + " " + e.To }
	was := map[string]api.Edge{}
	for _, e := range old {
		was[key(e)] = e
	}
	out := []api.EdgeChange{}
	for _, e := range cur {
		o, ok := was[key(e)]
		switch {
		case !ok:
			out = append(out, api.EdgeChange{Change: "added", Edge: e})
		case o.FoundBy != e.FoundBy || o.Dead != e.Dead:
			out = append(out, api.EdgeChange{Change: "changed", Edge: e})
		}
		delete(was, key(e))
	}
	for _, e := range old {
		if _, ok := was[key(e)]; ok {
			out = append(out, api.EdgeChange{Change: "removed", Edge: e})
		}
	}
	// A From that lost exactly one edge and gained exactly one: its backend moved.
	count := map[string][2]int{}
	for _, c := range out {
		n := count[c.Edge.From]
		switch c.Change {
		case "added":
			n[0]++
		case "removed":
			n[1]++
		}
		count[c.Edge.From] = n
	}
	moved := []api.EdgeChange{}
	for _, c := range out {
		n := count[c.Edge.From]
		if n != [2]int{1, 1} || c.Change == "changed" {
			moved = append(moved, c)
			continue
		}
		if c.Change == "added" {
			i := slices.IndexFunc(out, func(o api.EdgeChange) bool { return o.Change == "removed" && o.Edge.From == c.Edge.From })
			prev := out[i].Edge
			moved = append(moved, api.EdgeChange{Change: "moved", Edge: c.Edge, Previous: &prev})
		}
	}
	return moved
}

func (s *service) sites(ctx context.Context) ([]agentsapi.Site, error) {
	var out []agentsapi.Site
	req := page.Request{Limit: 1000}
	for {
		r, err := agentsapi.SiteList.Call(ctx, s.deps.NC, req)
		if err != nil {
			return nil, fmt.Errorf("sites: %w", err)
		}
		out = append(out, r.Sites...)
		if r.NextCursor == "" {
			return out, nil
		}
		req.Cursor = r.NextCursor
	}
}

// sshCredentials names the site's ssh credentials (discovery keeps them).
func (s *service) sshCredentials(ctx context.Context, site string) ([]string, error) {
	var out []string
	req := page.Request{Limit: 1000}
	for {
		r, err := discoveryapi.CredentialList.Call(ctx, s.deps.NC, req)
		if err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
		for _, c := range r.Credentials {
			if c.Site == site && c.Type == envelope.CredSSH {
				out = append(out, c.Name)
			}
		}
		if r.NextCursor == "" {
			return out, nil
		}
		req.Cursor = r.NextCursor
	}
}

// lookupName finds a host's address by name or FQDN in the CMDB.
func (s *service) lookupName(ctx context.Context, name string) (netip.Addr, error) {
	r, err := cmdbapi.List.Call(ctx, s.deps.NC, cmdbapi.ListRequest{Class: "hardware", Search: name, Limit: 50})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("look %s up in the CMDB: %w", name, err)
	}
	for _, ci := range r.Items {
		fqdn, _ := ci.Attributes["fqdn"].(string)
		if !strings.EqualFold(ci.Name, name) && !strings.EqualFold(fqdn, name) {
			continue
		}
		if ip, _ := ci.Attributes["ip_address"].(string); ip != "" {
			if a, err := netip.ParseAddr(ip); err == nil {
				return a, nil
			}
		}
	}
	return netip.Addr{}, bus.Fail(errs.BadRequest, "%s: no host of that name or FQDN in the CMDB (discover the site first, or give the address)", name)
}

// bridgeProber runs commands over ssh_exec through a bridge of the site (svc.agents.probe),
// trying the credential that worked last on each host first.
type bridgeProber struct {
	nc      Deps
	site    string
	creds   []string
	timeout time.Duration
	worked  syncMap
}

func (b *bridgeProber) Exec(ctx context.Context, ip string, cmds []string) ([]Output, error) {
	commands := make([]sshexec.Command, len(cmds))
	for i, c := range cmds {
		commands[i] = sshexec.Command{Cmd: c}
	}
	params, err := json.Marshal(sshexec.Params{Commands: commands, ConnectTimeout: "10s", Timeout: "20s"})
	if err != nil {
		return nil, err
	}
	creds := slices.Clone(b.creds)
	if w, ok := b.worked.get(ip); ok {
		if i := slices.Index(creds, w); i > 0 {
			creds = append([]string{w}, slices.Delete(creds, i, i+1)...)
		}
	}
	r, err := agentsapi.Probe.Call(ctx, b.nc.NC, agentsapi.ProbeRequest{Site: b.site, Kind: sshexec.Kind, Target: ip, Params: params,
		Timeout: b.timeout.String(), Credentials: creds})
	if err != nil {
		return nil, err
	}
	if len(r.Results) == 0 {
		return nil, errors.New("the probe gave no result")
	}
	res := r.Results[len(r.Results)-1]
	var data sshexec.Result
	if len(res.Data) > 0 {
		if err := json.Unmarshal(res.Data, &data); err != nil {
			return nil, fmt.Errorf("ssh_exec result: %w", err)
		}
	}
	if res.Status != envelope.StatusOK && res.Status != envelope.StatusPartial || len(data.Outputs) == 0 {
		msg := string(res.Status)
		if res.Error != nil {
			msg = res.Error.Code + ": " + res.Error.Message
		}
		return nil, fmt.Errorf("ssh %s: %s", ip, msg)
	}
	if data.Credential != "" {
		b.worked.set(ip, data.Credential)
	}
	out := make([]Output, len(data.Outputs))
	for i, o := range data.Outputs {
		out[i] = Output{Stdout: o.Stdout.Text, Exit: -1, Truncated: o.Stdout.Truncated, Size: o.Stdout.Size}
		if o.ExitCode != nil {
			out[i].Exit = *o.ExitCode
		}
	}
	return out, nil
}

// syncMap is a small concurrent string map.
type syncMap struct {
	mu sync.Mutex
	m  map[string]string
}

func (m *syncMap) get(k string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.m[k]
	return v, ok
}

func (m *syncMap) set(k, v string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = map[string]string{}
	}
	m.m[k] = v
}
