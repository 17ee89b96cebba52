// Package lease makes replicas of a service active/standby on one key of a KV bucket with a
// TTL: the replica holding the key serves, the others wait. A service whose state lives in
// the memory of the replica that advances it (discovery's runs, orchestration's runs,
// correlation's open alerts) must never have two replicas advancing the same state.
//
// The holder renews the key every TTL/3, only if nobody wrote it since its own last write
// (an expected-last-sequence publish: KeyValue.Update would drop the key's TTL). It gives the
// lease up — and stops serving — when another replica holds the key, or when it could not
// renew for 2/3 of the TTL, before the key can expire and a standby take it. A stopping
// replica deletes the key so a standby takes over at once; a restarted replica with the same
// holder name takes its own key back at once.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/clock"
)

// Config of one replica's lease.
type Config struct {
	JS     jetstream.JetStream
	KV     jetstream.KeyValue // the bucket (bus.KVLeases), created with a marker TTL
	Key    string             // e.g. "discovery.active"
	Holder string             // this replica's name, stable across its restarts
	TTL    time.Duration
	Clock  clock.Clock // nil: the real one
	Logger *slog.Logger
	Name   string // the service, for log lines
}

// Active is one replica's hold on the key.
type Active struct {
	cfg  Config
	rev  uint64
	lost atomic.Bool
	// epoch is the fencing token of the current holding: the leases stream's sequence of the
	// write that acquired it. Every holding, of any replica, gets a larger one.
	epoch atomic.Uint64
	// validUntil (unix ns on the lease's clock) is when this replica stops trusting its hold
	// without a renewal: 2/3 of the TTL after the last renewal was *sent*, so before the key
	// can expire on the server and a standby take it.
	validUntil atomic.Int64

	// stop and held are the renewal goroutine of a holding begun by Take (Drop ends it).
	takeMu sync.Mutex
	stop   context.CancelFunc
	held   chan struct{}
}

// New returns the replica's lease (not yet acquired).
func New(cfg Config) *Active {
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Active{cfg: cfg}
}

// Lost reports whether this replica was serving and lost the lease: what it still holds in
// memory belongs to the next active replica and must not be written.
func (a *Active) Lost() bool { return a.lost.Load() }

// ErrFenced: this replica's hold on the lease is lost or too old to trust (it was frozen,
// starved or cut off past the point where a standby may have taken over). It must not
// write state nor publish work: what it holds in memory may be stale.
var ErrFenced = errors.New("lease fenced: this replica's lease expired or was taken over; it writes nothing")

// Token is the fencing token of the current holding, or ErrFenced when the replica does not
// hold the lease or has not renewed it recently enough (its clock says so: a process
// frozen by SIGSTOP or a VM pause past its lease finds its clock jumped on waking). Check it
// right before every write and publish; carry it in every KV value written (Store) so a
// write that slipped between a check and a freeze still loses to the next holder's.
func (a *Active) Token() (uint64, error) {
	if a.lost.Load() {
		return 0, ErrFenced
	}
	e := a.epoch.Load()
	if e == 0 || a.cfg.Clock.Now().UnixNano() >= a.validUntil.Load() {
		return 0, ErrFenced
	}
	return e, nil
}

// fenced marks the lease lost: a newer holder's write was seen.
func (a *Active) fenced(why string) {
	if !a.lost.Swap(true) {
		a.cfg.Logger.Error(a.cfg.Name+" lease lost: a newer holder wrote our state", "replica", a.cfg.Holder, "why", why)
	}
}

// Serve waits for the lease, runs serve while it holds it (serve's context ends when the
// lease is lost or ctx ends), calls idle after each serving period (drop in-memory state:
// the next active replica owns it), and goes back to waiting if the lease was lost. It
// returns nil when ctx ends, or serve's error when serve failed with the lease still held.
func (a *Active) Serve(ctx context.Context, serve func(context.Context) error, idle func()) error {
	c := a.cfg
	waiting := false
	for {
		ok, err := a.acquire(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.Logger.Warn(c.Name+" lease: cannot read the leases bucket; retrying", "err", err)
		}
		if !ok {
			if !waiting {
				c.Logger.Info("another "+c.Name+" replica is active: standing by", "replica", c.Holder)
				waiting = true
			}
			select {
			case <-ctx.Done():
				return nil
			case <-c.Clock.After(c.TTL / 4):
			}
			continue
		}
		waiting = false
		c.Logger.Info(c.Name+" replica active", "replica", c.Holder, "fence", a.epoch.Load())
		actx, cancel := context.WithCancel(ctx)
		a.lost.Store(false)
		held := make(chan struct{})
		go func() {
			defer close(held)
			a.hold(actx, cancel)
		}()
		err = serve(actx)
		cancel()
		<-held
		a.epoch.Store(0) // not serving: no token until the next holding
		if !a.lost.Load() {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			a.release(rctx)
			rcancel()
		}
		if idle != nil {
			idle()
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !a.lost.Load() {
			return err
		}
		c.Logger.Warn(c.Name+" lease lost: this replica stopped serving and stands by", "replica", c.Holder)
	}
}

// Take tries once to take the lease — free, or already this holder's (a restarted replica
// of the same name) — for a unit of work owned by one replica among active ones (a
// discovery run): no waiting, no serving loop. Held, it is renewed in the background until
// Drop or until it is lost; the context returned ends then. Token fences every write as
// with Serve. ok false: another replica holds it (err nil) or the bucket could not be read.
func (a *Active) Take(ctx context.Context) (held context.Context, ok bool, err error) {
	a.takeMu.Lock()
	defer a.takeMu.Unlock()
	if a.stop != nil {
		return nil, false, errors.New("lease " + a.cfg.Key + ": already taken by this replica")
	}
	if ok, err = a.acquire(ctx); !ok {
		return nil, false, err
	}
	a.lost.Store(false)
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	a.stop, a.held = cancel, done
	go func() {
		defer close(done)
		a.hold(hctx, cancel)
	}()
	return hctx, true, nil
}

// Drop ends a holding begun by Take: renewals stop, Token fences from now on, and the key is
// deleted when it is still ours, so another replica may take it at once.
func (a *Active) Drop(ctx context.Context) {
	a.takeMu.Lock()
	defer a.takeMu.Unlock()
	if a.stop == nil {
		return
	}
	a.stop()
	<-a.held
	a.stop, a.held = nil, nil
	a.epoch.Store(0)
	if !a.lost.Load() {
		a.release(ctx)
	}
}

// acquire takes the lease if it is free or already this replica's.
func (a *Active) acquire(ctx context.Context) (bool, error) {
	c := a.cfg
	e, err := c.KV.Get(ctx, c.Key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err := c.KV.Create(ctx, c.Key, []byte(c.Holder), jetstream.KeyTTL(c.TTL))
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil // another replica was quicker
		}
		if err != nil {
			return false, err
		}
		a.rev = rev
		a.epoch.Store(rev)
		a.validUntil.Store(a.cfg.Clock.Now().Add(a.cfg.TTL * 2 / 3).UnixNano())
		return true, nil
	case err != nil:
		return false, err
	case string(e.Value()) != c.Holder:
		return false, nil
	}
	a.rev = e.Revision()
	if err := a.renew(ctx); err != nil {
		return false, nil
	}
	a.epoch.Store(a.rev) // a new holding, even by the same holder: a new token
	return true, nil
}

// renew extends the lease by its TTL, only if nobody wrote the key since our last write.
func (a *Active) renew(ctx context.Context) error {
	c := a.cfg
	sent := c.Clock.Now()
	m := &nats.Msg{Subject: "$KV." + c.KV.Bucket() + "." + c.Key, Data: []byte(c.Holder)}
	ack, err := c.JS.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(a.rev), jetstream.WithMsgTTL(c.TTL))
	if err != nil {
		return err
	}
	a.rev = ack.Sequence
	a.validUntil.Store(sent.Add(c.TTL * 2 / 3).UnixNano())
	return nil
}

// release gives the lease up, if it is still ours.
//
// a.rev may be behind the key: a renewal sent just before serving stopped can be applied by
// the server while its publish already returned the context's error (or its ack was lost),
// so the key's last revision is one we never learnt. The delete on a.rev then fails and the
// key would stay until its TTL, keeping a standby out for that long. So on a revision
// mismatch the key is read again: still this holder's value, it is deleted at the revision
// read (a compare-and-set still: a standby's write in between wins).
func (a *Active) release(ctx context.Context) {
	c := a.cfg
	err := c.KV.Delete(ctx, c.Key, jetstream.LastRevision(a.rev))
	for attempt := 0; err != nil && attempt < 3; attempt++ {
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
			break
		}
		e, gerr := c.KV.Get(ctx, c.Key)
		if gerr != nil || string(e.Value()) != c.Holder {
			return // gone already, or another replica's now
		}
		err = c.KV.Delete(ctx, c.Key, jetstream.LastRevision(e.Revision()))
	}
	if err != nil {
		c.Logger.Warn(c.Name+" lease not released: a standby takes over when it expires", "replica", c.Holder, "ttl", c.TTL, "err", err)
	}
}

// hold renews the lease every TTL/3 until ctx ends. When it cannot renew — another replica
// holds the key, or the bucket is unreachable for most of a TTL — it marks the lease lost
// and stops serving, before the key can expire and be taken.
func (a *Active) hold(ctx context.Context, stop context.CancelFunc) {
	c := a.cfg
	t := c.Clock.NewTicker(c.TTL / 3)
	defer t.Stop()
	renewed := c.Clock.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		rctx, cancel := context.WithTimeout(ctx, c.TTL/4)
		err := a.renew(rctx)
		cancel()
		if err == nil {
			renewed = c.Clock.Now()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		var apiErr *jetstream.APIError
		taken := errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
		if taken || c.Clock.Since(renewed) > c.TTL*2/3 {
			c.Logger.Error(c.Name+" lease lost", "replica", c.Holder, "err", fmt.Errorf("renew: %w", err))
			a.lost.Store(true)
			stop()
			return
		}
		c.Logger.Warn(c.Name+" lease: renew failed, retrying", "err", err)
	}
}
