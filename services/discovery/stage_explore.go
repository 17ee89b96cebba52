package discovery

import (
	"context"
	"errors"
	"time"
)

// exploreStage sends the hosts classified in this turn the probes of their class (the
// software, adapters and applications of a Linux server, a switch's interfaces and LLDP
// neighbours…), those whose conditions the host's facts meet.
type exploreStage struct {
	probes  prober
	timeout time.Duration
}

func (e *exploreStage) advance(ctx context.Context, t *turn) bool {
	for _, c := range t.classified {
		h := c.host
		for _, spec := range c.by.Explore {
			if !spec.When.Matches(&h.Facts) {
				continue
			}
			p, pp, err := issue(ctx, e.probes, t, probeRequest{Spec: spec, IP: h.IP, Step: StepExplore, Timeout: e.timeout})
			if errors.Is(err, errNoCredentials) {
				t.hostLog(h, HostLog{Step: StepExplore, Kind: spec.Kind, Status: "skipped", Note: spec.Name + ": no " + spec.Credentials + " credential for site " + t.run.Site})
				continue
			}
			if err != nil { // cannot be built (not transient: issue.go)
				t.run.Counters.ProbesUnsent++
				t.hostLog(h, HostLog{Step: StepExplore, Kind: spec.Kind, Status: "error", Error: spec.Name + ": not sent: " + err.Error()})
				continue
			}
			if p == nil { // pending, built on a later turn: the host waits for it (issue.go)
				t.hostLog(h, HostLog{Step: StepExplore, Kind: spec.Kind, Status: "waiting", Note: spec.Name + ": not built yet: " + pp.Unsent})
				continue
			}
			t.hostLog(h, HostLog{Step: StepExplore, Kind: spec.Kind, Probe: p.ID, Status: "sent", Note: spec.Name + credNote(p)})
			t.out = append(t.out, p)
		}
	}
	return false
}
