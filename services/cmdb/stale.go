package cmdb

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// StaleLeaseKey is the key of the leases bucket held by the replica that marks stale CIs.
const StaleLeaseKey = "cmdb.stale"

// staleLoop marks stale CIs once at start and then every StaleEvery, until ctx ends.
func (s *service) staleLoop(ctx context.Context) {
	s.markStale(ctx)
	t := s.clock.NewTicker(s.cfg.StaleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			s.markStale(ctx)
		}
	}
}

// markStale flags the CIs no source has seen for StaleAfter and announces them, in the
// replica that wins the round's lease.
//
// The lease is a key created with a TTL a little shorter than the interval: Create fails
// while another replica's key lives, so each interval one replica runs, whichever ticks
// first after the key expired. Marking twice would be harmless in outcome (only CIs not
// stale yet are flagged) but could write a CI's "stale" history row twice, so a replica that
// cannot reach the bucket skips the round rather than risk it.
func (s *service) markStale(ctx context.Context) {
	if s.kv == nil {
		return
	}
	ttl := max(s.cfg.StaleEvery-s.cfg.StaleEvery/10, time.Second)
	_, err := s.kv.Create(ctx, StaleLeaseKey, []byte(s.holder), jetstream.KeyTTL(ttl))
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return // another replica has this round
	case err != nil:
		if ctx.Err() == nil {
			s.log.Warn("stale marking skipped: cannot take the lease", "key", StaleLeaseKey, "err", err)
		}
		return
	}
	now := s.clock.Now().UTC()
	// The stale events commit with the flags (outbox), like an ingest's.
	announce := func(refs []store.Ref) ([]store.OutboxMsg, error) {
		msgs := make([]store.OutboxMsg, 0, len(refs))
		for _, r := range refs {
			body := envelope.Change{CI: r.ID, Class: r.Class, Op: OpStale, Source: ire.StaleSource, Time: now}
			m, err := s.changes.message(bus.ChangeSubject(r.Class),
				envelope.Meta{ID: changeID(now, "stale", r.ID, now.Format(time.RFC3339Nano))}, &body)
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, m)
		}
		return msgs, nil
	}
	refs, err := s.eng.MarkStale(ctx, s.cfg.StaleAfter, now, announce)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("mark stale", "err", err)
		}
		return
	}
	if len(refs) == 0 {
		return
	}
	s.drain.notify()
	s.log.Info("CIs marked stale", "count", len(refs), "not_seen_for", s.cfg.StaleAfter)
}
