package discovery

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// ingestStage closes a run once nothing is pending and every host is done: it sends the
// LLDP relations between the run's devices, waits (ReceiptWait at most) for the CMDB's
// receipts of the host payloads — the counts of CIs created, updated and unchanged are the
// CMDB's to give — and completes the run.
type ingestStage struct {
	sink        payloadSender
	receiptWait time.Duration
}

func (s *ingestStage) advance(ctx context.Context, t *turn) bool {
	r := t.run
	if len(r.Pending) > 0 || len(t.hostsIn(stageNew, stageClassify, stageExplore)) > 0 {
		return false
	}
	if !r.Relations {
		s.relations(ctx, t)
		r.Relations = true
		t.rs.dirty = true
	}
	if n := t.rs.awaitingReceipts(); n > 0 {
		if t.rs.receiptsSince.IsZero() {
			t.rs.receiptsSince = t.now
		}
		if t.now.Sub(t.rs.receiptsSince) < s.receiptWait {
			return false
		}
		r.errorf(fmt.Sprintf("no CMDB receipt for %d payloads within %s: their CIs are counted as sent only (is the cmdb service running? `outpost status`)", n, s.receiptWait))
	}
	c := r.Counters
	t.finish(StateCompleted, fmt.Sprintf("%d addresses, %d alive, %d classified; CIs: %d created, %d updated, %d unchanged",
		c.Addresses, c.Alive, c.Classified, c.CIsCreated, c.CIsUpdated, c.CIsUnchanged))
	return false
}

// relations links devices that see each other over LLDP (connected_to), one payload per
// pair, each side identified by what its own payload said (serial, name, address).
func (s *ingestStage) relations(ctx context.Context, t *turn) {
	byName := map[string]*Host{}
	for _, h := range t.rs.hosts {
		if h.Class != "" && h.Name != "" {
			byName[strings.ToLower(h.Name)] = h
		}
	}
	done := map[string]bool{}
	for _, ip := range sortedHostIPs(t.rs) {
		a := t.rs.hosts[ip]
		for _, n := range a.LLDP {
			b := byName[strings.ToLower(n.RemoteName)]
			if b == nil || b == a {
				continue
			}
			pair := []string{a.IP, b.IP}
			slices.Sort(pair)
			key := strings.Join(pair, "|")
			if done[key] {
				continue
			}
			done[key] = true
			p := &envelope.CIPayload{Source: SourceName, Observed: t.now,
				Items:     []envelope.CIItem{stub("a", a), stub("b", b)},
				Relations: []envelope.CIRelation{{Type: "connected_to", From: "a", To: "b"}}}
			if err := send(ctx, s.sink, t, payloadID(t.run.ID, "lldp|"+key), p); err != nil {
				t.run.errorf("lldp " + key + ": " + err.Error())
				continue
			}
			t.hostLog(a, HostLog{Step: StepExplore, Note: fmt.Sprintf("LLDP: %s connected to %s (%s)", n.LocalPort, b.Name, n.RemotePort)})
		}
	}
}
