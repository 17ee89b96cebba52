package correlation

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/lease"
)

// owner spreads the partitions over the live replicas: each partition has a lease
// (correlation.part.<p> in the leases bucket); a replica takes a free partition while it
// holds fewer than its fair share (partitions / live replicas, rounded up) and gives back
// its highest-numbered partitions above that share, so a second replica gets half the
// partitions within a few lease periods, and a dead replica's partitions go to the
// survivors when their leases expire. Live replicas announce themselves with a member key
// whose TTL is the lease's.
//
// Leases run on the real clock, whatever the service's clock: their keys expire on the
// server's clock, and a replica that renewed on a fake one would lose them unawares.
type owner struct {
	s      *service
	member string

	mu      sync.Mutex
	owned   map[int]bool
	members int
}

var errRebalance = errors.New("partition given back to rebalance")

const memberPrefix = "correlation.member."

var keyUnsafe = regexp.MustCompile(`[^A-Za-z0-9_-]`)

func newOwner(s *service) *owner {
	return &owner{s: s, member: memberPrefix + keyUnsafe.ReplaceAllString(s.cfg.Replica, "_"), owned: map[int]bool{}, members: 1}
}

// run announces the replica and serves partitions until ctx ends.
func (o *owner) run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { o.announce(ctx) })
	for p := range o.s.cfg.Partitions {
		wg.Go(func() { o.loop(ctx, p) })
	}
	wg.Wait()
	// A stopping replica withdraws at once: the others' share grows without waiting a TTL.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	_ = o.s.kvLse.Delete(dctx, o.member)
	cancel()
	return nil
}

// announce keeps the member key alive and counts the live members.
func (o *owner) announce(ctx context.Context) {
	ttl := o.s.cfg.ActiveLease
	t := time.NewTicker(ttl / 4)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, ttl/4)
		_, err := o.s.deps.JS.Publish(pctx, "$KV."+o.s.kvLse.Bucket()+"."+o.member, []byte(o.s.cfg.Replica), jetstream.WithMsgTTL(ttl))
		if err == nil {
			if keys, err := o.s.kvLse.ListKeysFiltered(pctx, memberPrefix+">"); err == nil {
				n := 0
				for range keys.Keys() {
					n++
				}
				o.mu.Lock()
				o.members = max(n, 1)
				o.mu.Unlock()
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (o *owner) share() int {
	n := o.s.cfg.Partitions
	return (n + o.members - 1) / o.members
}

// mayTake: under the fair share.
func (o *owner) mayTake() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.owned) < o.share()
}

// giveBack decides, under the lock, whether p is one of the partitions above the share
// (the highest-numbered ones); it removes it from the owned set at once, so that two
// partitions deciding together never both go.
func (o *owner) giveBack(p int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	extra := len(o.owned) - o.share()
	if extra <= 0 {
		return false
	}
	var mine []int
	for q := range o.owned {
		mine = append(mine, q)
	}
	slices.Sort(mine)
	if !slices.Contains(mine[len(mine)-extra:], p) {
		return false
	}
	delete(o.owned, p)
	return true
}

func (o *owner) set(p int, on bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if on {
		o.owned[p] = true
	} else {
		delete(o.owned, p)
	}
}

// Owned lists the partitions this replica serves now.
func (o *owner) Owned() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []int
	for p := range o.owned {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// loop serves partition p whenever this replica may and can hold it.
func (o *owner) loop(ctx context.Context, p int) {
	ttl := o.s.cfg.ActiveLease
	l := lease.New(lease.Config{JS: o.s.deps.JS, KV: o.s.kvLse, Key: partitionLeaseKey(p), Holder: o.s.cfg.Replica, TTL: ttl,
		Clock: clock.Real(), Logger: o.s.log.With("partition", p), Name: Service + " partition"})
	for ctx.Err() == nil {
		if !o.mayTake() {
			sleepReal(ctx, ttl/4)
			continue
		}
		err := l.Serve(ctx, func(pctx context.Context) error { return o.serve(pctx, p) }, nil)
		if err != nil && !errors.Is(err, errRebalance) && ctx.Err() == nil {
			o.s.log.Error("partition failed; retrying", "partition", p, "err", err)
			sleepReal(ctx, ttl/4)
		}
	}
}

// serve runs the partition's processor while the lease is held and the partition is within
// this replica's share.
func (o *owner) serve(ctx context.Context, p int) error {
	o.set(p, true)
	defer o.set(p, false)
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(o.s.cfg.ActiveLease / 4)
		defer t.Stop()
		for {
			if o.giveBack(p) {
				o.s.log.Info("giving a partition back to balance the replicas", "partition", p)
				cancel(errRebalance)
				return
			}
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
		}
	})
	err := newProcessor(o.s, p).run(pctx)
	cancel(nil)
	wg.Wait()
	if errors.Is(context.Cause(pctx), errRebalance) && ctx.Err() == nil {
		return errRebalance
	}
	if err != nil && !strings.Contains(err.Error(), "context canceled") {
		return err
	}
	return nil
}
