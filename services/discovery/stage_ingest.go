package discovery

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
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

// relations links devices that see each other over LLDP or CDP (connected_to), one payload
// per pair, each side identified by what its own payload said (serial, name, address), and
// the two ports (adapters) connected_to each other when both are known. A neighbour is
// found by its management address, its chassis id, then its name without domain: a device
// may call itself by its FQDN while its neighbours report the short name, or the reverse.
func (s *ingestStage) relations(ctx context.Context, t *turn) {
	ix := newNeighbourIndex(t.rs)
	done := map[string]bool{}
	for _, ip := range sortedHostIPs(t.rs) {
		a := t.rs.hosts[ip]
		for _, n := range a.LLDP {
			b := ix.find(n)
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
			pa, pb := adapterNamed(a, n.LocalPort), adapterNamed(b, n.RemotePort)
			if pa != nil && pb != nil {
				p.Items = append(p.Items,
					envelope.CIItem{Ref: "pa", Class: "network_adapter", Parent: "a", Attributes: map[string]any{"name": pa.Name, "mac_address": pa.MAC}},
					envelope.CIItem{Ref: "pb", Class: "network_adapter", Parent: "b", Attributes: map[string]any{"name": pb.Name, "mac_address": pb.MAC}})
				p.Relations = append(p.Relations, envelope.CIRelation{Type: "connected_to", From: "pa", To: "pb"})
			}
			if err := send(ctx, s.sink, t, payloadID(t.run.ID, "lldp|"+key), p); err != nil {
				t.run.errorf("lldp " + key + ": " + err.Error())
				continue
			}
			t.hostLog(a, HostLog{Step: StepExplore, Note: fmt.Sprintf("%s: %s connected to %s (%s)", strings.ToUpper(cmp.Or(n.Protocol, "lldp")), n.LocalPort, b.Name, n.RemotePort)})
		}
	}
}

// neighbourIndex finds the host an LLDP/CDP neighbour is, among a run's classified hosts.
type neighbourIndex struct {
	byName, byChassis, byIP map[string]*Host
	ambiguous               map[string]bool
}

func newNeighbourIndex(rs *runState) *neighbourIndex {
	ix := &neighbourIndex{byName: map[string]*Host{}, byChassis: map[string]*Host{}, byIP: map[string]*Host{}, ambiguous: map[string]bool{}}
	for _, ip := range sortedHostIPs(rs) {
		h := rs.hosts[ip]
		if h.Class == "" {
			continue
		}
		ix.byIP[h.IP] = h
		if c := h.Facts.LocalChassis(); c != "" {
			ix.byChassis[c] = h
		}
		if h.Name != "" {
			n := shortName(h.Name)
			if o, ok := ix.byName[n]; ok && o != h {
				ix.ambiguous[n] = true // two devices of one short name: names cannot tell them apart
			}
			ix.byName[n] = h
		}
	}
	return ix
}

// find: by management address, chassis id, then the name without its domain.
func (ix *neighbourIndex) find(n LLDPNeighbour) *Host {
	if h := ix.byIP[n.RemoteAddress]; h != nil {
		return h
	}
	if h := ix.byChassis[n.RemoteChassis]; n.RemoteChassis != "" && h != nil {
		return h
	}
	if sn := shortName(n.RemoteName); !ix.ambiguous[sn] {
		return ix.byName[sn]
	}
	return nil
}

// shortName is a host name without its domain, lower-cased (an address stays whole).
func shortName(n string) string {
	n = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(n), "."))
	if _, err := netip.ParseAddr(n); err == nil {
		return n
	}
	s, _, _ := strings.Cut(n, ".")
	return s
}

// adapterNamed is the host's adapter of that name with a MAC (nil when unknown), from what
// SSH or SNMP reported.
func adapterNamed(h *Host, name string) *Adapter {
	var ads []Adapter
	if out, ok := h.Facts.SSH["ip -o link"]; ok {
		ads = parseIPLink(out)
	} else {
		ads = h.Facts.snmpAdapters()
	}
	for i := range ads {
		if ads[i].Name == name && ads[i].MAC != "" && ads[i].MAC != "00:00:00:00:00:00" {
			return &ads[i]
		}
	}
	return nil
}
