package discovery

import (
	"context"
	"fmt"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/telemetry"
)

// identifyStage sends the payload of each classified host whose probes are all in (or
// expired) to the CMDB, which identifies and reconciles its CIs; the host is then done. A
// payload that cannot be sent is tried again on the next turn (its stable message id
// deduplicates a resend).
type identifyStage struct {
	rules *Classifiers
	sink  payloadSender
}

func (s *identifyStage) advance(ctx context.Context, t *turn) bool {
	busy := t.busy()
	for _, h := range t.hostsIn(stageExplore) {
		if busy[h.IP] == 0 {
			s.identify(ctx, t, h)
		}
	}
	return false
}

func (s *identifyStage) identify(ctx context.Context, t *turn, h *Host) {
	h.Stage = stageDone
	t.touch(h)
	if h.Class == "" {
		return
	}
	rules := s.rules.Current()
	p := BuildPayload(rules, h, classifierNamed(rules, h.Classifier), t.now)
	if err := send(telemetry.WithTraceParent(ctx, h.Trace), s.sink, t, payloadID(t.run.ID, h.IP), p); err != nil {
		h.Stage = stageExplore
		t.hostLog(h, HostLog{Step: StepIdentify, Status: "error", Error: err.Error()})
		t.run.errorf(h.IP + ": send payload: " + err.Error())
		return
	}
	h.CIs = len(p.Items)
	t.hostLog(h, HostLog{Step: StepIdentify, Status: "sent", Note: fmt.Sprintf("payload with %d CIs and %d relations sent to the CMDB", len(p.Items), len(p.Relations))})
}

// classifierNamed is the classifier of that name in rules (nil when a reload removed it).
func classifierNamed(rules *Ruleset, name string) *Classifier {
	var found *Classifier
	for i := range rules.Classifiers {
		if rules.Classifiers[i].Name == name {
			found = &rules.Classifiers[i]
		}
	}
	return found
}

// send puts a payload of the run on the CMDB's stream and counts it.
func send(ctx context.Context, sink payloadSender, t *turn, id string, p *envelope.CIPayload) error {
	if err := sink.sendPayload(ctx, t.run.ID, id, p); err != nil {
		return err
	}
	c := &t.run.Counters
	c.PayloadsSent++
	c.CIsSent += len(p.Items)
	c.Relations += len(p.Relations)
	t.rs.dirty = true
	return nil
}
