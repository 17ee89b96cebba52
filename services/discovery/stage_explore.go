package discovery

import (
	"context"
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
			p, err := e.probes.probe(ctx, t, probeRequest{Spec: spec, IP: h.IP, Step: StepExplore, Timeout: e.timeout})
			if err != nil {
				t.hostLog(h, HostLog{Step: StepExplore, Kind: spec.Kind, Status: "skipped", Note: spec.Name + ": " + err.Error()})
				continue
			}
			t.hostLog(h, HostLog{Step: StepExplore, Kind: spec.Kind, Probe: p.ID, Status: "sent", Note: spec.Name + credNote(p)})
			t.out = append(t.out, p)
		}
	}
	return false
}
