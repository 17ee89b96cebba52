package orchestration

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
)

// ActiveLeaseKey is the key of the leases bucket held by the replica that runs workflows.
//
// A run is advanced by the replica that holds it in memory (every transition written
// through to KV before anything leaves), so two replicas must never advance the same run.
// Replicas are therefore active/standby, as discovery's are: the one holding the lease
// serves everything — endpoints, the result consumer, run timers — and the others wait, trying every ActiveLease/4. The
// lease is a key with a TTL, renewed well before it runs out; a replica that cannot renew
// it within its TTL stops serving before anyone else may take it, and a stopping replica
// deletes it so a standby takes over at once. A replica restarted with the same Replica name
// (the hub's is stable per data dir) takes its own lease back without waiting for the TTL.
const ActiveLeaseKey = "orchestration.active"

// lease is one replica's hold on ActiveLeaseKey.
type lease struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	holder string
	ttl    time.Duration
	rev    uint64
}

// acquire takes the lease if it is free or already this replica's.
func (l *lease) acquire(ctx context.Context) (bool, error) {
	e, err := l.kv.Get(ctx, ActiveLeaseKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err := l.kv.Create(ctx, ActiveLeaseKey, []byte(l.holder), jetstream.KeyTTL(l.ttl))
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil // another replica was quicker
		}
		if err != nil {
			return false, err
		}
		l.rev = rev
		return true, nil
	case err != nil:
		return false, err
	case string(e.Value()) != l.holder:
		return false, nil
	}
	l.rev = e.Revision()
	if err := l.renew(ctx); err != nil {
		return false, nil
	}
	return true, nil
}

// renew extends the lease by its TTL, only if nobody wrote the key since our last write.
// (KeyValue.Update would drop the key's TTL: the message is published with both checks.)
func (l *lease) renew(ctx context.Context) error {
	m := &nats.Msg{Subject: "$KV." + bus.KVLeases + "." + ActiveLeaseKey, Data: []byte(l.holder)}
	ack, err := l.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(l.rev), jetstream.WithMsgTTL(l.ttl))
	if err != nil {
		return err
	}
	l.rev = ack.Sequence
	return nil
}

// release gives the lease up, if it is still ours.
func (l *lease) release(ctx context.Context) {
	_ = l.kv.Delete(ctx, ActiveLeaseKey, jetstream.LastRevision(l.rev))
}

// serveWhenActive waits for the lease, serves while it holds it, and goes back to waiting
// if it is lost; it returns when ctx ends.
func (s *service) serveWhenActive(ctx context.Context) error {
	l := &lease{js: s.deps.JS, kv: s.kvLeases, holder: s.cfg.Replica, ttl: s.cfg.ActiveLease}
	waiting := false
	for {
		ok, err := l.acquire(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.log.Warn("orchestration lease: cannot read the leases bucket; retrying", "err", err)
		}
		if !ok {
			if !waiting {
				s.log.Info("another orchestration replica is active: standing by", "replica", s.cfg.Replica)
				waiting = true
			}
			select {
			case <-ctx.Done():
				return nil
			case <-s.clock.After(s.cfg.ActiveLease / 4):
			}
			continue
		}
		waiting = false
		s.log.Info("orchestration replica active", "replica", s.cfg.Replica)
		actx, cancel := context.WithCancel(ctx)
		s.lost.Store(false)
		held := make(chan struct{})
		go func() {
			defer close(held)
			s.holdLease(actx, l, cancel, &s.lost)
		}()
		err = s.serve(actx)
		cancel()
		<-held
		if !s.lost.Load() {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			l.release(rctx)
			rcancel()
		}
		s.mu.Lock()
		s.runs = map[string]*active{} // the next active replica owns them now
		s.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !s.lost.Load() {
			return err
		}
		s.log.Warn("orchestration lease lost: this replica stopped serving and stands by", "replica", s.cfg.Replica)
	}
}

// holdLease renews the lease every TTL/3 until ctx ends. When it cannot renew — another
// replica holds the key, or the bucket is unreachable for most of a TTL — it marks the lease
// lost and cancels serving, before the key can expire and be taken.
func (s *service) holdLease(ctx context.Context, l *lease, stop context.CancelFunc, lost *atomic.Bool) {
	t := s.clock.NewTicker(l.ttl / 3)
	defer t.Stop()
	renewed := s.clock.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		rctx, cancel := context.WithTimeout(ctx, l.ttl/4)
		err := l.renew(rctx)
		cancel()
		if err == nil {
			renewed = s.clock.Now()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		var apiErr *jetstream.APIError
		taken := errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
		if taken || s.clock.Since(renewed) > l.ttl*2/3 {
			s.log.Error("orchestration lease lost", "replica", l.holder, "err", fmt.Errorf("renew: %w", err))
			lost.Store(true)
			stop()
			return
		}
		s.log.Warn("orchestration lease: renew failed, retrying", "err", err)
	}
}
