package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	st, err := s.scope.site(ctx, r.Site)
	if err != nil {
		t.finish(StateFailed, err.Error())
		return
	}
	if keys, err := s.scope.recipients(ctx, r.Site); err != nil {
		t.finish(StateFailed, err.Error())
		return
	} else if len(keys) == 0 {
		// probes would wait in the queue until their deadline: say it now
		t.finish(StateFailed, fmt.Sprintf("site %s has no approved bridge: approve one with `outpost agents approve`", r.Site))
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
	// The chunks are cut for the site's bridges that can scan: the site's consumer hands
	// them out across the bridges' pull requests (round robin among waiting requests), so
	// each bridge takes a share and a bridge killed mid-chunk loses only its chunk, which
	// the consumer redelivers to another after AckWait.
	scanners, err := s.scope.scanners(ctx, r.Site)
	if err != nil {
		t.finish(StateFailed, err.Error())
		return
	}
	size := s.cfg.scanChunkSize(len(addrs), scanners)
	var out = t.out
	for i := 0; i < len(addrs); i += size {
		chunk := addrs[i:min(i+size, len(addrs))]
		targets := make([]string, len(chunk))
		for j, a := range chunk {
			targets[j] = a.String()
		}
		p, err := scanProbe(ctx, s.probes, t, "", targets, ports, s.cfg.ScanTimeout)
		if err != nil {
			t.finish(StateFailed, "scan probe: "+err.Error())
			return
		}
		out = append(out, p)
	}
	if s.cfg.SNMPEveryAddress {
		for _, spec := range s.rules.Current().Probes {
			if !spec.Sweep {
				continue
			}
			for _, a := range addrs {
				p, err := s.probes.probe(ctx, t, probeRequest{Spec: spec, IP: a.String(), Step: StepSweep, Timeout: sweepTimeout})
				if errors.Is(err, errNoCredentials) {
					t.logf(fmt.Sprintf("sweep %s skipped: no %s credential for site %s", spec.Name, spec.Credentials, r.Site))
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
	t.logf(fmt.Sprintf("scanning %d addresses in %d chunks of up to %d for %d scanning bridges, %d probes", len(addrs), (len(addrs)+size-1)/size, size, scanners, len(out)-len(t.out)))
	t.out = out
	t.rs.dirty = true
}
