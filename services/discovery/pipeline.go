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
	"github.com/outpost-dev/outpost/libs/lease"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/libs/probes/tcpscan"
	"github.com/outpost-dev/outpost/libs/seal"
	"github.com/outpost-dev/outpost/libs/telemetry"
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
	// Capabilities and Apps say whether the bridge takes discovery's tcp_scan probes
	// (empty: not reported, or every one).
	Capabilities []string `json:"capabilities"`
	Apps         []string `json:"apps"`
}

// scans reports whether the bridge takes discovery's tcp_scan chunks.
func (a agentView) scans() bool {
	return bus.Serves(a.Apps, bus.ProbeLane(Service)) && (len(a.Capabilities) == 0 || slices.Contains(a.Capabilities, tcpscan.Capability))
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
	c, err := s.siteBridges(ctx, siteName, false)
	return c.keys, err
}

// scanners is how many of the site's approved bridges take discovery's tcp_scan chunks,
// read afresh (and refreshing recipients' cache): it is asked once per run, and a count
// cached before a bridge's approval would cut the scan for fewer bridges than serve it.
func (s *service) scanners(ctx context.Context, siteName string) (int, error) {
	c, err := s.siteBridges(ctx, siteName, true)
	return c.scanners, err
}

func (s *service) siteBridges(ctx context.Context, siteName string, fresh bool) (bridgeCache, error) {
	s.bridgesMu.Lock()
	c, ok := s.bridges[siteName]
	s.bridgesMu.Unlock()
	if ok && !fresh && s.now().Sub(c.at) < 10*time.Second {
		return c, nil
	}
	agents, err := agentsList[agentView](ctx, s.deps.NC, "ls", "agents")
	if err != nil {
		if ok {
			// The agents service did not answer in time (a /16 sweep asks often under load):
			// the bridges known a moment ago still seal this probe's credentials, where failing
			// would lose the probe's part of the sweep.
			s.log.Warn("site bridges not refreshed: using the last known", "site", siteName, "age", s.now().Sub(c.at).Round(time.Second), "err", err)
			return c, nil
		}
		return bridgeCache{}, fmt.Errorf("agents: %w", err)
	}
	c = bridgeCache{at: s.now()}
	for _, a := range agents {
		if a.Site == siteName && a.State == "approved" && a.XKey != "" {
			c.keys = append(c.keys, a.XKey)
			if a.scans() {
				c.scanners++
			}
		}
	}
	s.bridgesMu.Lock()
	s.bridges[siteName] = c
	s.bridgesMu.Unlock()
	return c, nil
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

// probe builds a probe of the run and registers it as pending (the prober of the stages):
// for ssh_exec the host key on record (trust on first use: the bridge refuses any other),
// and the site's credentials of the type the spec names, sealed to its bridges.
func (s *service) probe(ctx context.Context, t *turn, req probeRequest) (*envelope.Probe, error) {
	if f, ok := s.cfg.Hooks.(ProbeFaults); ok {
		if err := f.ProbeFault(t.run.ID, req.Step, req.Spec.Kind, req.IP); err != nil {
			return nil, err
		}
	}
	extra := map[string]any{}
	if req.Spec.Kind == "ssh_exec" && req.IP != "" {
		known, err := s.knownHostKey(ctx, t.run.Site, req.IP)
		if err != nil {
			return nil, err
		}
		if known != "" {
			extra["known_host_key"] = known
		}
	}
	p, err := probeEnvelope(t, req, extra)
	if err != nil {
		return nil, err
	}
	if req.Spec.Credentials != "" && s.replayOf(t.run.ID) == nil { // a replay sends nothing to a site
		if err := s.attachCredentials(ctx, t.rs, p, req.Spec.Credentials, req.IP); err != nil {
			return nil, err
		}
	}
	t.register(p, req)
	return p, nil
}

// attachCredentials seals the site's credentials of a type to the probe, the one that
// worked last time for this address first.
func (s *service) attachCredentials(ctx context.Context, rs *runState, p *envelope.Probe, typ, ip string) error {
	if now := s.now(); rs.creds == nil || now.Sub(rs.credsAt) > 10*time.Second {
		rs.creds, rs.credsAt = map[string][]clearCredential{}, now
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

// publish sends probes in parallel; they are on record as pending (KVPending) already. A
// probe that cannot be sent now is kept and sent again, same id, on the next turn, until
// its deadline; a replica whose lease is fenced sends nothing.
func (s *service) publish(ctx context.Context, rs *runState, probes []*envelope.Probe) (sent []*envelope.Probe) {
	if len(probes) == 0 {
		return nil
	}
	if rp := s.replayOf(rs.run.ID); rp != nil {
		s.answerFromStore(ctx, rs, rp, probes)
		return probes
	}
	var mu sync.Mutex
	var failed []*envelope.Probe
	var firstErr error
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	// publishing outlives a shutdown that starts meanwhile: these probes are already pending;
	// they join the trace of the request that started the run
	ctx, cancel := context.WithTimeout(telemetry.WithTraceParent(context.WithoutCancel(ctx), rs.run.TraceParent), 30*time.Second)
	defer cancel()
	for _, p := range probes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := rs.fence()
			if err == nil {
				err = bus.PublishProbe(ctx, s.deps.JS, s.pub, p)
			}
			if err == nil {
				s.recordProbe(ctx, p) // what it asked, to replay the run from RESULTS
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, p)
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			sent = append(sent, p)
		}()
	}
	wg.Wait()
	if len(failed) == 0 {
		return sent
	}
	if errors.Is(firstErr, lease.ErrFenced) {
		s.log.Warn("probes not published: lease fenced", "run", rs.run.ID, "probes", len(failed))
		return sent
	}
	s.log.Warn("probes not published; sent again on the next turn", "run", rs.run.ID, "probes", len(failed), "err", firstErr)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.unsent = append(rs.unsent, failed...)
	return sent
}

// fence is nil while this replica holds the active lease (libs/lease.Active.Token):
// schedules and retention; a run's writes are fenced by runState.fence.
func (s *service) fence() error {
	_, err := s.active.Token()
	return err
}

// fenceRun is nil while this replica may write and publish for the run.
func (s *service) fenceRun(run string) error {
	if s.own == nil {
		return s.fence()
	}
	s.mu.Lock()
	rs := s.runs[run]
	s.mu.Unlock()
	if rs == nil {
		return lease.ErrFenced // not (any more) this replica's run
	}
	return rs.fence()
}

// takeUnsent returns the probes kept from earlier turns that are still pending.
func (rs *runState) takeUnsent() []*envelope.Probe {
	var out []*envelope.Probe
	for _, p := range rs.unsent {
		if _, ok := rs.run.Pending[p.ID]; ok {
			out = append(out, p)
		}
	}
	rs.unsent = nil
	return out
}

// advance runs one turn of a run's pipeline (stage.go), then writes what the turn changed
// and publishes its probes: hosts, pending probes and (when its state moved) the run record
// are written first, so a crash at any instant leaves every probe that may be out on record
// (pending.go). A failed write holds the turn's probes back until a later turn's writes
// succeed. It is called on every tick and once for a new run.
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
	before := r.State
	t := newTurn(rs, s.now())
	s.pipeline.advance(ctx, t)
	out := append(rs.takeUnsent(), t.out...)
	points := burstPoints(rs, out)
	s.at(points, out, r.ID, true)
	var failed error
	done := terminalState(r.State)
	periodic := t.now.Sub(rs.lastSaved) > time.Second || done
	// Pending probes are written before the hosts: a host's record moves to the stage that
	// awaits the turn's probes (new → classify, classify → explore) only once they are on
	// record. In the other order a crash, or a replica frozen past its lease, between the two
	// writes left a host at classify with nothing pending for it: the next replica took its
	// probes as answered and classified it on no facts (the fencing test's woken replica hit
	// this window about one run in three). In this order the worst a crash leaves is a host
	// at its old stage with probes pending: sent again on resume, and once they are in the
	// stage sends its probes anew — some probes twice, nothing lost.
	if err := s.savePending(ctx, rs, periodic); err != nil {
		failed = err
	}
	if rs.unsavedHosts == nil {
		rs.unsavedHosts = map[string]*Host{}
	}
	maps.Copy(rs.unsavedHosts, t.touched)
	if failed == nil {
		for _, ip := range slices.Sorted(maps.Keys(rs.unsavedHosts)) {
			if err := s.saveHost(ctx, rs, rs.unsavedHosts[ip]); err != nil {
				failed = err
				if !errors.Is(err, lease.ErrFenced) {
					r.errorf("save host " + ip + ": " + err.Error())
				}
				continue
			}
			delete(rs.unsavedHosts, ip)
		}
	}
	if done && !terminalState(before) {
		s.logFinished(r)
	}
	// the run record is written at once when its state moves (a new scan, a finished run),
	// else at most every second: hosts and pending groups carry what a restart needs
	if rs.dirty && (r.State != before || periodic) {
		if err := s.saveRun(ctx, rs); err != nil && r.State != before {
			failed = err
		}
	}
	if failed != nil && len(out) > 0 {
		if !errors.Is(failed, lease.ErrFenced) {
			rs.unsent = out
			s.log.Warn("probes held back: their pending record is not written", "run", r.ID, "probes", len(out), "err", failed)
		}
		out = nil
	}
	rs.mu.Unlock()
	sent := s.publish(ctx, rs, out)
	s.at(points, sent, r.ID, false)
	if done {
		s.mu.Lock()
		delete(s.runs, r.ID)
		s.mu.Unlock()
		s.replays.Delete(r.ID)
		s.forget(rs)
		if s.own != nil {
			s.own.drop(rs) // the record says finished: nobody takes the run again
		}
	}
}

// forget drops what the fenced writers remember of a finished run's keys.
func (s *service) forget(rs *runState) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.runsW.Forget(rs.run.ID)
	for ip := range rs.hosts {
		rs.hostsW.Forget(hostKey(rs.run.ID, ip))
	}
	for g := range rs.saved {
		rs.pendingW.Forget(pendingKey(rs.run.ID, g))
	}
}

// finish ends a run outside a turn (a cancel request) and writes it (caller holds rs.mu).
func (s *service) finish(ctx context.Context, rs *runState, state, reason string) {
	finishRun(rs.run, s.now(), state, reason)
	rs.dirty = true
	s.logFinished(rs.run)
	_ = s.savePending(ctx, rs, true)
	_ = s.saveRun(ctx, rs)
}

func (s *service) logFinished(r *RunRecord) {
	s.log.Info("discovery run finished", "run", r.ID, "state", r.State, "reason", r.Reason, "alive", r.Counters.Alive,
		"classified", r.Counters.Classified, "payloads", r.Counters.PayloadsSent)
}

// sendPayload puts a payload on the CMDB ingest stream (the stages' payloadSender).
func (s *service) sendPayload(ctx context.Context, run, id string, p *envelope.CIPayload) error {
	if rp := s.replayOf(run); rp != nil && rp.dryRun {
		s.dryPayload(rp, p) // writes disabled: only listed
		return nil
	}
	if err := s.fenceRun(run); err != nil {
		return err
	}
	subject := bus.CMDBIngestSubjectFor(*p, s.cfg.Partitions)
	if _, err := s.pub.Publish(ctx, subject, envelope.Meta{ID: id, Run: run}, p); err != nil {
		return err
	}
	if s.cfg.Hooks != nil {
		s.cfg.Hooks.At(PointPayload, run)
	}
	return nil
}
