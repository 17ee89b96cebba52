package correlation

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
)

// lease is one replica's hold on ActiveLeaseKey: a key with a TTL, renewed every TTL/3
// only if nobody wrote it since (discovery's active lease, the same way). A replica that
// cannot renew within 2/3 of the TTL stops processing before anyone else may take over.
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
			return false, nil
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
	return l.renew(ctx) == nil, nil
}

// renew extends the lease by its TTL if nobody wrote the key since our last write
// (KeyValue.Update would drop the key's TTL: the message carries both checks).
func (l *lease) renew(ctx context.Context) error {
	m := &nats.Msg{Subject: "$KV." + bus.KVLeases + "." + ActiveLeaseKey, Data: []byte(l.holder)}
	ack, err := l.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(l.rev), jetstream.WithMsgTTL(l.ttl))
	if err != nil {
		return err
	}
	l.rev = ack.Sequence
	return nil
}

func (l *lease) release(ctx context.Context) {
	_ = l.kv.Delete(ctx, ActiveLeaseKey, jetstream.LastRevision(l.rev))
}

// hold renews until ctx ends; when it cannot, it closes lost and calls stop.
func (l *lease) hold(ctx context.Context, clk clock.Clock, log *slog.Logger, stop context.CancelFunc, lost chan struct{}) {
	ttl := l.ttl
	t := clk.NewTicker(ttl / 3)
	defer t.Stop()
	renewed := clk.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		rctx, cancel := context.WithTimeout(ctx, ttl/4)
		err := l.renew(rctx)
		cancel()
		if err == nil {
			renewed = clk.Now()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if isWrongLastSeq(err) || clk.Since(renewed) > ttl*2/3 {
			log.Error("correlation lease lost", "replica", l.holder, "err", err)
			close(lost)
			stop()
			return
		}
		log.Warn("correlation lease: renew failed, retrying", "err", err)
	}
}
