package discovery

import (
	"context"
	"fmt"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// handleReceipt counts what the CMDB made of a host's payload in its run. Idempotent: a
// host keeps the first receipt for its payload; a later one (a redelivered payload) and
// receipts of LLDP relation payloads or of finished runs are acknowledged and ignored.
func (s *service) handleReceipt(ctx context.Context, meta envelope.Meta, in *envelope.Ingested) error {
	if meta.Run == "" {
		return nil
	}
	if s.own != nil {
		rs, holder, err := s.own.ownerOf(ctx, meta.Run)
		switch {
		case err != nil:
			return err
		case holder != "":
			return s.own.forward(ctx, holder, handoff{Kind: handoffReceipt, Run: meta.Run, Meta: &meta, Ingested: in})
		case rs == nil:
			return nil
		}
		return s.applyReceipt(ctx, rs, meta, in)
	}
	if err := s.fence(); err != nil {
		return err // stale replica: not even an ack (see handleResult)
	}
	rs, err := s.loadRun(ctx, meta.Run)
	if err != nil || rs == nil {
		return err
	}
	return s.applyReceipt(ctx, rs, meta, in)
}

// applyReceipt counts a receipt in a run this replica owns.
func (s *service) applyReceipt(ctx context.Context, rs *runState, meta envelope.Meta, in *envelope.Ingested) error {
	if err := rs.fence(); err != nil {
		return err
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if terminalState(rs.run.State) {
		return nil
	}
	ip, ok := rs.payloadHost(in.Payload)
	if !ok {
		return nil
	}
	h := rs.hosts[ip]
	if h.Ingested != nil {
		return nil
	}
	h.Ingested = &Ingested{Created: in.Created, Updated: in.Updated, Unchanged: in.Unchanged, Conflicts: in.Conflicts, Skipped: in.Skipped}
	note := fmt.Sprintf("CMDB: %d created, %d updated, %d unchanged", in.Created, in.Updated, in.Unchanged)
	if in.Conflicts+in.Skipped > 0 {
		note += fmt.Sprintf(", %d in conflict, %d skipped (`outpost ci conflicts`)", in.Conflicts, in.Skipped)
	}
	h.logf(HostLog{Time: s.now(), Step: StepIdentify, Status: "ingested", Note: note})
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	if err := s.saveHost(ctx, rs, h); err != nil {
		h.Ingested = nil
		return fmt.Errorf("save host %s: %w", ip, err)
	}
	if s.cfg.Hooks != nil {
		s.cfg.Hooks.At(PointReceipt, meta.Run)
	}
	c := &rs.run.Counters
	c.Ingested++
	c.CIsCreated += in.Created
	c.CIsUpdated += in.Updated
	c.CIsUnchanged += in.Unchanged
	rs.dirty = true
	return nil
}

// payloadHost finds the host whose payload has this id (ids are derived from run and
// address, so the index is rebuilt when a host is not in it yet).
func (rs *runState) payloadHost(id string) (string, bool) {
	if ip, ok := rs.payloads[id]; ok {
		return ip, true
	}
	if rs.payloads == nil || len(rs.payloads) != len(rs.hosts) {
		rs.payloads = make(map[string]string, len(rs.hosts))
		for ip := range rs.hosts {
			rs.payloads[payloadID(rs.run.ID, ip)] = ip
		}
	}
	ip, ok := rs.payloads[id]
	return ip, ok
}

// awaitingReceipts counts the hosts whose payload went to the CMDB without a receipt yet.
func (rs *runState) awaitingReceipts() int {
	if rs.dry {
		return 0
	}
	n := 0
	for _, h := range rs.hosts {
		if h.CIs > 0 && h.Ingested == nil {
			n++
		}
	}
	return n
}
