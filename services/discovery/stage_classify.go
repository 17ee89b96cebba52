package discovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// classifyStage sends each new host the probes its open ports call for (SSH, SNMP, HTTP,
// TLS, LDAP…), and once their results are in (or expired) runs the classifiers on what
// answered: the host gets a class and attributes and goes on to explore, or it matched no
// classifier and is done without a CI. The run is exploring once no host is left to
// classify.
type classifyStage struct {
	rules   *Classifiers
	probes  prober
	timeout time.Duration
	// sweptAll: the scan stage already asked every address over SNMP (a live host without
	// an answer is asked again, and its log says so).
	sweptAll bool
}

func (c *classifyStage) advance(ctx context.Context, t *turn) bool {
	busy := t.busy()
	for _, h := range t.hostsIn(stageNew, stageClassify) {
		if busy[h.IP] > 0 {
			continue
		}
		switch h.Stage {
		case stageNew:
			t.out = append(t.out, c.send(ctx, t, h)...)
			h.Stage = stageClassify
			t.touch(h)
		case stageClassify:
			c.classify(t, h)
		}
	}
	if t.run.State == StateClassifying && len(t.hostsIn(stageNew, stageClassify)) == 0 {
		t.run.State = StateExploring
		t.rs.dirty = true
	}
	return false
}

// send picks the classify probes by what answered.
func (c *classifyStage) send(ctx context.Context, t *turn, h *Host) []*envelope.Probe {
	var out []*envelope.Probe
	for _, spec := range c.rules.Current().Probes {
		why := ""
		if spec.Sweep {
			if len(h.Facts.SNMP) > 0 {
				continue // answered already (in the sweep, or asked before)
			}
			// With the sweep on, an address alive on TCP whose sweep got no SNMP answer
			// (its probe given up after its resends, or the agent slow under load) is asked
			// once more here: it costs one probe per live host, not per address, and a
			// switch or printer is otherwise classified by its ports or not at all.
			if c.sweptAll {
				why = " (no SNMP answer in the sweep: asked again)"
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
			p, pp, err := issue(ctx, c.probes, t, probeRequest{Spec: spec, IP: h.IP, Port: port, Step: StepClassify, Timeout: c.timeout})
			if errors.Is(err, errNoCredentials) {
				note := fmt.Sprintf("no %s credential for site %s", spec.Credentials, t.run.Site)
				t.hostLog(h, HostLog{Step: StepClassify, Kind: spec.Kind, Status: "skipped", Note: spec.Name + ": " + note})
				continue
			}
			if err != nil { // cannot be built (not transient: issue.go)
				t.run.Counters.ProbesUnsent++
				t.hostLog(h, HostLog{Step: StepClassify, Kind: spec.Kind, Status: "error", Error: spec.Name + ": not sent: " + err.Error()})
				continue
			}
			if p == nil { // pending, built on a later turn: the host waits for it (issue.go)
				t.hostLog(h, HostLog{Step: StepClassify, Kind: spec.Kind, Status: "waiting", Note: spec.Name + ": not built yet: " + pp.Unsent})
				continue
			}
			t.hostLog(h, HostLog{Step: StepClassify, Kind: spec.Kind, Probe: p.ID, Status: "sent", Note: spec.Name + credNote(p) + why})
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

// classify runs the classifiers on a host's facts.
func (c *classifyStage) classify(t *turn, h *Host) {
	cl := c.rules.Current().Classify(&h.Facts)
	if cl == nil {
		h.Stage = stageDone
		t.run.Counters.Unclassified++
		t.hostLog(h, HostLog{Step: StepClassify, Note: fmt.Sprintf("no classifier matched (ports %v, snmp %t, ssh %t): no CI sent", h.Facts.Ports, len(h.Facts.SNMP) > 0, len(h.Facts.SSH) > 0)})
		return
	}
	h.Class, h.Classifier, h.ByPorts = cl.Class, cl.Name, cl.Match.SSHFailed != nil && *cl.Match.SSHFailed
	h.Attributes = cl.Attributes(&h.Facts)
	if n, _ := h.Attributes["name"].(string); n != "" {
		h.Name = n
	}
	t.run.Counters.Classified++
	note := "classified " + cl.Class + " by " + cl.Name
	if h.ByPorts {
		note += " (by ports only: every SSH credential failed: " + strings.Join(h.Failed["ssh"], ", ") + ")"
		t.logf(h.IP + ": " + note)
	}
	t.hostLog(h, HostLog{Step: StepClassify, Note: note})
	h.Stage = stageExplore
	t.classified = append(t.classified, classified{host: h, by: cl})
}
