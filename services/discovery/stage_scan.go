package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// scanStage starts a queued run — the site's ranges, a bridge to take the work, every
// tcp_scan chunk and (SNMPEveryAddress) the SNMP sweep at once — and holds the run until
// every one of them has its result or has expired.
type scanStage struct {
	cfg    Config
	rules  *Classifiers
	scope  scope
	probes prober
}

func (s *scanStage) advance(ctx context.Context, t *turn) bool {
	r := t.run
	switch r.State {
	case StateQueued:
		s.start(ctx, t)
		return true
	case StateScanning:
		if r.pendingFor(StepScan, "") > 0 || r.pendingFor(StepSweep, "") > 0 {
			return true
		}
		r.State = StateClassifying
		t.logf(fmt.Sprintf("scan done: %d alive of %d", r.Counters.Alive, r.Counters.Addresses))
		t.rs.dirty = true
	}
	return false
}

func (s *scanStage) start(ctx context.Context, t *turn) {
	r := t.run
	if t.now.Before(t.rs.startRetry) {
		return
	}
	st, err := s.scope.site(ctx, r.Site)
	if err != nil {
		s.startFailed(t, "site", err)
		return
	}
	if keys, err := s.scope.recipients(ctx, r.Site); err != nil {
		s.startFailed(t, "site bridges", err)
		return
	} else if len(keys) == 0 {
		// probes would wait in the queue until their deadline: say it now
		t.finish(StateFailed, fmt.Sprintf("site %s has no approved bridge: approve one with `outpost agents approve`", r.Site))
		return
	}
	// The chunks are cut for the site's bridges that can scan: the site's consumer hands
	// them out across the bridges' pull requests (round robin among waiting requests), so
	// each bridge takes a share and a bridge killed mid-chunk loses only its chunk, which
	// the consumer redelivers to another after AckWait. (Read before the run changes: a
	// start that must wait begins again from the top.)
	scanners, err := s.scope.scanners(ctx, r.Site)
	if err != nil {
		s.startFailed(t, "site bridges", err)
		return
	}
	if len(r.Ranges) == 0 {
		r.Ranges = st.Ranges
	}
	r.Exclude = append(slices.Clone(st.Exclude), r.Exclude...)
	addrs, err := expand(r.Ranges, r.Exclude, 1<<20)
	if err != nil {
		t.finish(StateFailed, err.Error())
		return
	}
	if len(addrs) == 0 {
		t.finish(StateCompleted, "no address to scan")
		return
	}
	r.Counters.Addresses = len(addrs)
	ports := r.Ports
	if len(ports) == 0 {
		ports = s.cfg.Ports
	}
	size := s.cfg.scanChunkSize(len(addrs), scanners)
	var out = t.out
	for i := 0; i < len(addrs); i += size {
		chunk := addrs[i:min(i+size, len(addrs))]
		targets := make([]string, len(chunk))
		for j, a := range chunk {
			targets[j] = a.String()
		}
		p, _, err := scanProbe(ctx, s.probes, t, "", targets, ports, s.cfg.ScanTimeout)
		if err != nil {
			t.finish(StateFailed, "scan probe: "+err.Error())
			return
		}
		if p != nil { // nil: registered unsent, built on a later turn (issue.go)
			out = append(out, p)
		}
	}
	if s.cfg.SNMPEveryAddress {
		r.SweepWindow = s.cfg.sweepWindow(scanners)
		for _, spec := range s.rules.Current().Probes {
			if !spec.Sweep {
				continue
			}
			// Each address's probe is issued on its own (issue.go): a build that fails
			// transiently waits on record for a later turn, one that cannot be built is
			// given up for its address alone — never the rest of the range with it.
			failed := map[string][]string{}
			for _, a := range addrs {
				p, _, err := issue(ctx, s.probes, t, probeRequest{Spec: spec, IP: a.String(), Step: StepSweep, Timeout: sweepTimeout})
				if errors.Is(err, errNoCredentials) {
					t.logf(fmt.Sprintf("sweep %s skipped: no %s credential for site %s", spec.Name, spec.Credentials, r.Site))
					break
				}
				if err != nil {
					r.Counters.ProbesUnsent++
					failed[err.Error()] = append(failed[err.Error()], a.String())
					continue
				}
				if p != nil {
					out = append(out, p)
				}
			}
			for _, why := range slices.Sorted(maps.Keys(failed)) {
				as := failed[why]
				r.errorf(fmt.Sprintf("sweep %s: probe not sent: %s — %d addresses: %s", spec.Name, why, len(as), strings.Join(as[:min(len(as), 10)], " ")))
			}
		}
	}
	r.State = StateScanning
	t.logf(fmt.Sprintf("scanning %d addresses in %d chunks of up to %d for %d scanning bridges, %d probes (%d more built on the next turns; at most %d sweep probes out)",
		len(addrs), (len(addrs)+size-1)/size, size, scanners, len(out)-len(t.out), t.unsentNow, r.SweepWindow))
	t.out = out
	t.rs.dirty = true
}

// startFailed handles a run whose start could not read its site (what, err): a transient
// failure (a timeout under load) is tried again on a later turn, with a growing backoff, up
// to maxBuildTries times; any other fails the run.
func (s *scanStage) startFailed(t *turn, what string, err error) {
	if !transient(err) || t.rs.startTries+1 >= maxBuildTries {
		t.finish(StateFailed, what+": "+err.Error())
		return
	}
	t.rs.startTries++
	wait := buildBackoff(t.rs.startTries)
	t.rs.startRetry = t.now.Add(wait)
	t.logf(fmt.Sprintf("start waits %s: %s: %v", wait, what, err))
	t.rs.dirty = true
}
