package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
	"github.com/outpost-dev/outpost/libs/seal"
)

// site is what the agents service knows of a site.
type site struct {
	Name    string   `json:"name"`
	Ranges  []string `json:"ranges"`
	Exclude []string `json:"exclude,omitempty"`
}

type agentView struct {
	Name  string `json:"name"`
	Site  string `json:"site"`
	State string `json:"state"`
	XKey  string `json:"xkey"`
}

// agentsList reads a whole list of the agents service (op site_ls or ls), page after page:
// its answers are cursor pages (libs/page), and a hub may have more sites or agents than one.
func agentsList[T any](ctx context.Context, nc *nats.Conn, op, field string) ([]T, error) {
	var all []T
	req := page.Request{Limit: page.MaxLimit}
	for {
		var out map[string]json.RawMessage
		if err := bus.Request(ctx, nc, "agents", op, req, &out); err != nil {
			return nil, err
		}
		var items []T
		if err := json.Unmarshal(out[field], &items); err != nil {
			return nil, fmt.Errorf("agents %s: %q: %w", op, field, err)
		}
		all = append(all, items...)
		var next string
		if raw, ok := out["next_cursor"]; ok {
			if err := json.Unmarshal(raw, &next); err != nil {
				return nil, fmt.Errorf("agents %s: next_cursor: %w", op, err)
			}
		}
		if next == "" || len(items) == 0 {
			return all, nil
		}
		req.Cursor = next
	}
}

func (s *service) site(ctx context.Context, name string) (site, error) {
	sites, err := agentsList[site](ctx, s.deps.NC, "site_ls", "sites")
	if err != nil {
		return site{}, fmt.Errorf("sites: %w", err)
	}
	for _, st := range sites {
		if st.Name == name {
			return st, nil
		}
	}
	return site{}, bus.Errorf(404, "site %q not found; create it with `outpost site add`", name)
}

// recipients are the curve keys of the site's approved bridges (cached 10 s).
func (s *service) recipients(ctx context.Context, siteName string) ([]string, error) {
	s.bridgesMu.Lock()
	c, ok := s.bridges[siteName]
	s.bridgesMu.Unlock()
	if ok && time.Since(c.at) < 10*time.Second {
		return c.keys, nil
	}
	agents, err := agentsList[agentView](ctx, s.deps.NC, "ls", "agents")
	if err != nil {
		return nil, fmt.Errorf("agents: %w", err)
	}
	var keys []string
	for _, a := range agents {
		if a.Site == siteName && a.State == "approved" && a.XKey != "" {
			keys = append(keys, a.XKey)
		}
	}
	s.bridgesMu.Lock()
	s.bridges[siteName] = bridgeCache{keys: keys, at: time.Now()}
	s.bridgesMu.Unlock()
	return keys, nil
}

// expand lists the addresses of ranges (CIDR, address, or a-b) minus exclude.
// inScope reports whether ip lies inside the ranges and outside the exclusions (the forms
// expand takes): what a bridge reports about any other address is not the run's to believe.
func inScope(ranges, exclude []string, ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	holds := func(r string) bool {
		r = strings.TrimSpace(r)
		switch {
		case strings.Contains(r, "/"):
			p, err := netip.ParsePrefix(r)
			return err == nil && p.Masked().Contains(a)
		case strings.Contains(r, "-"):
			lo, hi, _ := strings.Cut(r, "-")
			x, err1 := netip.ParseAddr(strings.TrimSpace(lo))
			y, err2 := netip.ParseAddr(strings.TrimSpace(hi))
			return err1 == nil && err2 == nil && x.Compare(a) <= 0 && a.Compare(y) <= 0
		default:
			x, err := netip.ParseAddr(r)
			return err == nil && x == a
		}
	}
	if slices.ContainsFunc(exclude, holds) {
		return false
	}
	return slices.ContainsFunc(ranges, holds)
}

func expand(ranges, exclude []string, limit int) ([]netip.Addr, error) {
	ex := map[netip.Addr]bool{}
	var exPrefixes []netip.Prefix
	for _, e := range exclude {
		if p, err := netip.ParsePrefix(e); err == nil {
			exPrefixes = append(exPrefixes, p.Masked())
		} else if a, err := netip.ParseAddr(e); err == nil {
			ex[a] = true
		}
	}
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	add := func(a netip.Addr) error {
		if ex[a] || seen[a] {
			return nil
		}
		for _, p := range exPrefixes {
			if p.Contains(a) {
				return nil
			}
		}
		if len(out) >= limit {
			return fmt.Errorf("ranges hold more than %d addresses; split the discovery", limit)
		}
		seen[a] = true
		out = append(out, a)
		return nil
	}
	for _, r := range ranges {
		r = strings.TrimSpace(r)
		switch {
		case strings.Contains(r, "/"):
			p, err := netip.ParsePrefix(r)
			if err != nil {
				return nil, fmt.Errorf("range %q: %w", r, err)
			}
			p = p.Masked()
			first, last := p.Addr(), lastAddr(p)
			if p.Addr().Is4() && p.Bits() <= 30 { // skip network and broadcast addresses
				first, last = first.Next(), last.Prev()
			}
			for a := first; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
				if err := add(a); err != nil {
					return nil, err
				}
			}
		case strings.Contains(r, "-"):
			lo, hi, _ := strings.Cut(r, "-")
			a, err1 := netip.ParseAddr(strings.TrimSpace(lo))
			b, err2 := netip.ParseAddr(strings.TrimSpace(hi))
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("range %q: %w", r, err)
			}
			for x := a; x.IsValid() && x.Compare(b) <= 0; x = x.Next() {
				if err := add(x); err != nil {
					return nil, err
				}
			}
		default:
			a, err := netip.ParseAddr(r)
			if err != nil {
				return nil, fmt.Errorf("range %q: %w", r, err)
			}
			if err := add(a); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 1 << (7 - j)
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// outgoing is a probe registered as pending and waiting to be published.
type outgoing struct {
	probe *envelope.Probe
}

// newProbe builds a probe and registers it as pending (caller holds rs.mu).
func (s *service) newProbe(ctx context.Context, rs *runState, spec ProbeSpec, ip string, port int, step string, timeout time.Duration) (*envelope.Probe, error) {
	r := rs.run
	params := map[string]any{}
	maps.Copy(params, spec.Params)
	if port > 0 {
		params["port"] = port
	}
	if spec.Kind == "ssh_exec" && ip != "" {
		// trust on first use: once a key is on record, the bridge refuses any other
		known, err := s.knownHostKey(ctx, r.Site, ip)
		if err != nil {
			return nil, err
		}
		if known != "" {
			params["known_host_key"] = known
		}
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return nil, err
	}
	p := &envelope.Probe{ID: envelope.NewID(), Run: r.ID, App: Service, Site: r.Site, Priority: envelope.PriorityStandard,
		Kind: spec.Kind, Capability: catalog.Capability(spec.Kind), Target: ip, Params: raw,
		Deadline: s.now().Add(timeout)}
	if spec.Credentials != "" {
		if err := s.attachCredentials(ctx, rs, p, spec.Credentials, ip); err != nil {
			return nil, err
		}
	}
	r.Pending[p.ID] = &pendingProbe{IP: ip, Step: step, Kind: spec.Kind, Name: spec.Name, Port: port, Cred: spec.Credentials, Deadline: p.Deadline}
	r.Counters.ProbesSent++
	rs.dirty = true
	return p, nil
}

// attachCredentials seals the site's credentials of a type to the probe, the one that
// worked last time for this address first.
func (s *service) attachCredentials(ctx context.Context, rs *runState, p *envelope.Probe, typ, ip string) error {
	if rs.creds == nil || time.Since(rs.credsAt) > 10*time.Second {
		rs.creds, rs.credsAt = map[string][]clearCredential{}, time.Now()
	}
	cached, ok := rs.creds[typ]
	if !ok {
		var err error
		if cached, err = s.creds.open(ctx, rs.run.Site, credTypes(typ), rs.run.Credentials); err != nil {
			return err
		}
		rs.creds[typ] = cached
	}
	creds := slices.Clone(cached)
	if len(creds) == 0 {
		return errNoCredentials
	}
	if e, err := s.kvAff.Get(ctx, affinityKey(rs.run.Site, typ, ip)); err == nil {
		first := string(e.Value())
		slices.SortStableFunc(creds, func(a, b clearCredential) int {
			switch {
			case a.Name == first && b.Name != first:
				return -1
			case b.Name == first && a.Name != first:
				return 1
			}
			return 0
		})
	}
	if s.deps.CurveKey == nil {
		return errors.New("no hub curve key: credentials cannot be sealed")
	}
	keys, err := s.recipients(ctx, rs.run.Site)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return fmt.Errorf("site %s has no approved bridge to seal credentials to", rs.run.Site)
	}
	for _, c := range creds {
		sc, err := seal.Seal(s.deps.CurveKey, seal.Secret{Name: c.Name, Type: c.Type, Username: c.Username, Secret: c.Secret,
			Fields: c.Fields, AllowInsecure: c.AllowInsecure, Probe: p.ID, Time: s.now()}, keys)
		if err != nil {
			return err
		}
		p.Secrets = append(p.Secrets, sc)
		p.Credentials = append(p.Credentials, c.Name)
	}
	return nil
}

var errNoCredentials = errors.New("no credential of this type for the site")

// publish sends probes in parallel (they are already pending). A probe that cannot be
// sent is dropped from pending with the reason.
func (s *service) publish(ctx context.Context, rs *runState, probes []*envelope.Probe) {
	if len(probes) == 0 {
		return
	}
	var mu sync.Mutex
	var failed []string
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	// publishing outlives a shutdown that starts meanwhile: these probes are already pending
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for _, p := range probes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := bus.PublishProbe(ctx, s.deps.JS, s.pub, p); err != nil {
				mu.Lock()
				failed = append(failed, p.ID+": "+err.Error())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failed) == 0 {
		return
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, f := range failed {
		id, _, _ := strings.Cut(f, ":")
		delete(rs.run.Pending, id)
		rs.run.errorf("publish probe " + f)
	}
	rs.dirty = true
}

// advance moves a run forward: it is called on every tick and after results.
func (s *service) advance(ctx context.Context, rs *runState) {
	if ctx.Err() != nil {
		return // shutting down: start no new step
	}
	// a step once begun is finished even if shutdown starts meanwhile: KV and the CMDB
	// stream see it whole or not at all
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	rs.mu.Lock()
	r := rs.run
	var out []*envelope.Probe
	now := s.now()
	switch {
	case terminalState(r.State):
	case now.After(r.Deadline):
		s.finish(ctx, rs, StateFailed, fmt.Sprintf("max run time reached (%s)", r.Deadline.Sub(r.Created).Round(time.Second)))
	case r.State == StateQueued:
		out = s.startScan(ctx, rs)
	default:
		if rs.resumed {
			rs.resumed = false
			out = s.reissue(ctx, rs)
		}
		s.expire(rs, now)
		out = append(out, s.progress(ctx, rs)...)
	}
	if rs.dirty && (now.Sub(rs.lastSaved) > time.Second || terminalState(r.State)) {
		s.saveRun(ctx, rs)
	}
	done := terminalState(r.State)
	rs.mu.Unlock()
	s.publish(ctx, rs, out)
	if done {
		s.mu.Lock()
		delete(s.runs, r.ID)
		s.mu.Unlock()
	}
}

// expire drops pending probes whose deadline passed long ago: their result will not come.
func (s *service) expire(rs *runState, now time.Time) {
	for id, p := range rs.run.Pending {
		if now.Before(p.Deadline.Add(15 * time.Second)) {
			continue
		}
		delete(rs.run.Pending, id)
		rs.dirty = true
		if h := rs.hosts[p.IP]; h != nil {
			h.logf(HostLog{Step: p.Step, Kind: p.Kind, Probe: id, Status: "timeout", Error: "no result before the probe's deadline"})
		}
		if p.Step == "scan" {
			rs.run.errorf(fmt.Sprintf("scan probe %s: no result before its deadline", id))
		}
	}
}

func (s *service) finish(ctx context.Context, rs *runState, state, reason string) {
	r := rs.run
	r.State, r.Reason = state, reason
	t := s.now()
	r.Finished = &t
	r.Pending = nil
	r.logf("run " + state + ": " + reason)
	rs.dirty = true
	s.log.Info("discovery run finished", "run", r.ID, "state", state, "reason", reason, "alive", r.Counters.Alive,
		"classified", r.Counters.Classified, "payloads", r.Counters.PayloadsSent)
	s.saveRun(ctx, rs)
}

// startScan resolves the ranges and sends every scan chunk (and the SNMP sweep) at once.
func (s *service) startScan(ctx context.Context, rs *runState) []*envelope.Probe {
	r := rs.run
	st, err := s.site(ctx, r.Site)
	if err != nil {
		s.finish(ctx, rs, StateFailed, err.Error())
		return nil
	}
	if keys, err := s.recipients(ctx, r.Site); err != nil {
		s.finish(ctx, rs, StateFailed, err.Error())
		return nil
	} else if len(keys) == 0 {
		// probes would wait in the queue until their deadline: say it now
		s.finish(ctx, rs, StateFailed, fmt.Sprintf("site %s has no approved bridge: approve one with `outpost agents approve`", r.Site))
		return nil
	}
	if len(r.Ranges) == 0 {
		r.Ranges = st.Ranges
	}
	r.Exclude = append(slices.Clone(st.Exclude), r.Exclude...)
	addrs, err := expand(r.Ranges, r.Exclude, 1<<20)
	if err != nil {
		s.finish(ctx, rs, StateFailed, err.Error())
		return nil
	}
	if len(addrs) == 0 {
		s.finish(ctx, rs, StateCompleted, "no address to scan")
		return nil
	}
	r.Counters.Addresses = len(addrs)
	ports := r.Ports
	if len(ports) == 0 {
		ports = s.cfg.Ports
	}
	var out []*envelope.Probe
	for i := 0; i < len(addrs); i += s.cfg.ChunkSize {
		chunk := addrs[i:min(i+s.cfg.ChunkSize, len(addrs))]
		targets := make([]string, len(chunk))
		for j, a := range chunk {
			targets[j] = a.String()
		}
		p, err := s.scanProbe(ctx, rs, targets, ports)
		if err != nil {
			s.finish(ctx, rs, StateFailed, "scan probe: "+err.Error())
			return nil
		}
		out = append(out, p)
	}
	if s.cfg.SNMPEveryAddress {
		for _, spec := range s.rules.Current().Probes {
			if !spec.Sweep {
				continue
			}
			for _, a := range addrs {
				p, err := s.newProbe(ctx, rs, spec, a.String(), 0, "sweep", 30*time.Second)
				if errors.Is(err, errNoCredentials) {
					r.logf(fmt.Sprintf("sweep %s skipped: no %s credential for site %s", spec.Name, spec.Credentials, r.Site))
					break
				}
				if err != nil {
					r.errorf(fmt.Sprintf("sweep %s: %v", spec.Name, err))
					break
				}
				out = append(out, p)
			}
		}
	}
	r.State = StateScanning
	r.logf(fmt.Sprintf("scanning %d addresses in %d chunks, %d probes", len(addrs), (len(addrs)+s.cfg.ChunkSize-1)/s.cfg.ChunkSize, len(out)))
	s.saveRun(ctx, rs)
	return out
}

func (s *service) scanProbe(ctx context.Context, rs *runState, targets []string, ports []int) (*envelope.Probe, error) {
	spec := ProbeSpec{Name: "scan", Kind: "tcp_scan", Params: map[string]any{"targets": targets, "ports": ports}}
	p, err := s.newProbe(ctx, rs, spec, "", 0, "scan", s.cfg.ScanTimeout)
	if err != nil {
		return nil, err
	}
	p.Target = ""
	pp := rs.run.Pending[p.ID]
	pp.Addrs, pp.Targets, pp.Ports = len(targets), targets, ports
	return p, nil
}

// reissue sends every pending probe again under a new id after a restart: the old ones may
// never have left, and a late result of an old one is ignored (it is no longer pending).
func (s *service) reissue(ctx context.Context, rs *runState) []*envelope.Probe {
	r := rs.run
	rules := s.rules.Current()
	specOf := func(p *pendingProbe) (ProbeSpec, bool) {
		for _, sp := range rules.Probes {
			if sp.Name == p.Name && (p.Step == "classify" || p.Step == "sweep") {
				return sp, true
			}
		}
		for _, c := range rules.Classifiers {
			for _, sp := range c.Explore {
				if sp.Name == p.Name && p.Step == "explore" {
					return sp, true
				}
			}
		}
		return ProbeSpec{}, false
	}
	var out []*envelope.Probe
	old := r.Pending
	r.Pending = map[string]*pendingProbe{}
	for id, p := range old {
		var np *envelope.Probe
		var err error
		switch p.Step {
		case "scan":
			np, err = s.scanProbe(ctx, rs, p.Targets, p.Ports)
		default:
			spec, ok := specOf(p)
			if !ok {
				err = fmt.Errorf("probe %s is no longer in the classifiers", p.Name)
				break
			}
			timeout := s.cfg.ProbeTimeout
			if p.Step == "sweep" {
				timeout = 30 * time.Second
			}
			np, err = s.newProbe(ctx, rs, spec, p.IP, p.Port, p.Step, timeout)
		}
		if err != nil {
			r.errorf(fmt.Sprintf("resend %s probe %s after restart: %v", p.Kind, id, err))
			continue
		}
		if h := rs.hosts[p.IP]; h != nil {
			h.logf(HostLog{Step: p.Step, Kind: p.Kind, Probe: np.ID, Status: "sent", Note: "sent again after a restart (was " + id + ")"})
		}
		out = append(out, np)
	}
	if len(out) > 0 {
		r.logf(fmt.Sprintf("resumed after a restart: %d pending probes sent again", len(out)))
	}
	return out
}

// progress moves hosts through classify → explore → identify, and the run to its end.
func (s *service) progress(ctx context.Context, rs *runState) []*envelope.Probe {
	r := rs.run
	if r.State == StateScanning {
		if r.pendingFor("scan", "") > 0 || r.pendingFor("sweep", "") > 0 {
			return nil
		}
		r.State = StateClassifying
		r.logf(fmt.Sprintf("scan done: %d alive of %d", r.Counters.Alive, r.Counters.Addresses))
		rs.dirty = true
	}
	var out []*envelope.Probe
	pendingByIP := map[string]int{}
	for _, p := range r.Pending {
		pendingByIP[p.IP]++
	}
	classifying := 0
	for _, ip := range slices.Sorted(maps.Keys(rs.hosts)) {
		h := rs.hosts[ip]
		if h.Stage == stageDone || pendingByIP[ip] > 0 {
			if h.Stage == stageNew || h.Stage == stageClassify {
				classifying++
			}
			continue
		}
		switch h.Stage {
		case stageNew:
			out = append(out, s.classifyProbes(ctx, rs, h)...)
			h.Stage = stageClassify
			classifying++
		case stageClassify:
			out = append(out, s.classify(ctx, rs, h)...)
		case stageExplore:
			s.identify(ctx, rs, h)
		}
		if err := s.saveHost(ctx, h); err != nil {
			r.errorf("save host " + ip + ": " + err.Error())
		}
		rs.dirty = true
	}
	if classifying == 0 && r.State == StateClassifying {
		r.State = StateExploring
		rs.dirty = true
	}
	if len(out) == 0 && len(r.Pending) == 0 {
		allDone := true
		for _, h := range rs.hosts {
			if h.Stage != stageDone {
				allDone = false
				break
			}
		}
		if allDone {
			if !r.Relations {
				s.sendRelations(ctx, rs)
				r.Relations = true
			}
			// the counters of CIs created, updated and unchanged are the CMDB's to give
			if n := rs.awaitingReceipts(); n > 0 {
				if rs.receiptsSince.IsZero() {
					rs.receiptsSince = s.now()
				}
				if s.now().Sub(rs.receiptsSince) < s.cfg.ReceiptWait {
					return out
				}
				r.errorf(fmt.Sprintf("no CMDB receipt for %d payloads within %s: their CIs are counted as sent only (is the cmdb service running? `outpost status`)", n, s.cfg.ReceiptWait))
			}
			c := r.Counters
			s.finish(ctx, rs, StateCompleted, fmt.Sprintf("%d addresses, %d alive, %d classified; CIs: %d created, %d updated, %d unchanged",
				c.Addresses, c.Alive, c.Classified, c.CIsCreated, c.CIsUpdated, c.CIsUnchanged))
		}
	}
	return out
}

// classifyProbes picks the classify-phase probes by what answered.
func (s *service) classifyProbes(ctx context.Context, rs *runState, h *Host) []*envelope.Probe {
	var out []*envelope.Probe
	for _, spec := range s.rules.Current().Probes {
		if spec.Sweep {
			if s.cfg.SNMPEveryAddress || len(h.Facts.SNMP) > 0 {
				continue // already asked in the scan phase
			}
		} else if !spec.When.Matches(&h.Facts) {
			continue
		}
		ports := []int{0}
		if len(spec.PerPort) > 0 {
			ports = nil
			for _, p := range spec.PerPort {
				if h.Facts.HasPort(p) {
					ports = append(ports, p)
				}
			}
		}
		for _, port := range ports {
			p, err := s.newProbe(ctx, rs, spec, h.IP, port, "classify", s.cfg.ProbeTimeout)
			if err != nil {
				note := err.Error()
				if errors.Is(err, errNoCredentials) {
					note = fmt.Sprintf("no %s credential for site %s", spec.Credentials, rs.run.Site)
				}
				h.logf(HostLog{Step: "classify", Kind: spec.Kind, Status: "skipped", Note: spec.Name + ": " + note})
				continue
			}
			h.logf(HostLog{Step: "classify", Kind: spec.Kind, Probe: p.ID, Status: "sent", Note: spec.Name + credNote(p)})
			out = append(out, p)
		}
	}
	return out
}

func credNote(p *envelope.Probe) string {
	if len(p.Credentials) == 0 {
		return ""
	}
	return " with credentials " + strings.Join(p.Credentials, ", ")
}

// classify runs the classifiers on a host's facts and sends its explore probes.
func (s *service) classify(ctx context.Context, rs *runState, h *Host) []*envelope.Probe {
	c := s.rules.Current().Classify(&h.Facts)
	if c == nil {
		h.Stage = stageDone
		rs.run.Counters.Unclassified++
		h.logf(HostLog{Step: "classify", Note: fmt.Sprintf("no classifier matched (ports %v, snmp %t, ssh %t): no CI sent", h.Facts.Ports, len(h.Facts.SNMP) > 0, len(h.Facts.SSH) > 0)})
		return nil
	}
	h.Class, h.Classifier, h.ByPorts = c.Class, c.Name, c.Match.SSHFailed != nil && *c.Match.SSHFailed
	h.Attributes = c.Attributes(&h.Facts)
	if n, _ := h.Attributes["name"].(string); n != "" {
		h.Name = n
	}
	rs.run.Counters.Classified++
	note := "classified " + c.Class + " by " + c.Name
	if h.ByPorts {
		note += " (by ports only: every SSH credential failed: " + strings.Join(h.Failed["ssh"], ", ") + ")"
		rs.run.logf(h.IP + ": " + note)
	}
	h.logf(HostLog{Step: "classify", Note: note})
	h.Stage = stageExplore
	var out []*envelope.Probe
	for _, spec := range c.Explore {
		if !spec.When.Matches(&h.Facts) {
			continue
		}
		p, err := s.newProbe(ctx, rs, spec, h.IP, 0, "explore", s.cfg.ProbeTimeout)
		if err != nil {
			h.logf(HostLog{Step: "explore", Kind: spec.Kind, Status: "skipped", Note: spec.Name + ": " + err.Error()})
			continue
		}
		h.logf(HostLog{Step: "explore", Kind: spec.Kind, Probe: p.ID, Status: "sent", Note: spec.Name + credNote(p)})
		out = append(out, p)
	}
	return out
}
