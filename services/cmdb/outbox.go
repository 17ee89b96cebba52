package cmdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// Outbox draining. An ingest writes its change events and receipt in its own transaction
// (store.Batch.Outbox); the drainer publishes them after the commit and deletes them once
// the stream acknowledged them. The handler acks its payload at the commit, not after the
// publish: a crash between the two leaves the messages in the outbox for the next drainer
// (this replica's restart or another replica), so nothing announced is lost, and a publish
// never holds up the partition.
//
// Messages keep their ids (Nats-Msg-Id), so one published twice — a drainer crashed between
// the ack and the delete, or two replicas drained the same rows — is stored once by the
// stream within its duplicate window.
const (
	// outboxBatch is how many outbox rows (committed transactions) one drain round reads and
	// publishes.
	outboxBatch = 16
	// outboxPoll is how often the drainer looks without being woken: rows that a replica
	// that crashed or another replica left.
	outboxPoll = time.Second
	// outboxAckWait bounds the wait for the stream's acks of one round.
	outboxAckWait = 10 * time.Second
	// pruneEvery is how often the drainer prunes old receipts.
	pruneEvery = time.Hour
)

// beforePublish, when set (tests only, through export_test.go), runs before each drain round
// publishes; an error skips the round. It lets a test freeze the drainer between the commit
// and the publish.
var beforePublish atomic.Pointer[func(context.Context, []store.OutboxMsg) error]

type drainer struct {
	st    store.Store
	js    jetstream.JetStream
	log   *slog.Logger
	keep  time.Duration // receipts older than this are pruned
	wake  chan struct{}
	clock clock.Clock
}

func newDrainer(st store.Store, js jetstream.JetStream, keep time.Duration, log *slog.Logger, clk clock.Clock) *drainer {
	return &drainer{st: st, js: js, keep: keep, log: log, wake: make(chan struct{}, 1), clock: clk}
}

// notify tells the drainer that a transaction committed messages.
func (d *drainer) notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// run drains until ctx ends, then makes one last short attempt so that a clean shutdown
// leaves nothing behind when the bus is up.
func (d *drainer) run(ctx context.Context) {
	tick := time.NewTicker(outboxPoll)
	defer tick.Stop()
	lastPrune := time.Time{}
	wait := 100 * time.Millisecond
	for {
		if d.clock.Since(lastPrune) >= pruneEvery {
			lastPrune = d.clock.Now()
			if n, err := d.st.PruneReceipts(ctx, lastPrune.Add(-d.keep)); err != nil && ctx.Err() == nil {
				d.log.Warn("old ingest receipts not pruned; retried in an hour", "err", err)
			} else if n > 0 {
				d.log.Info("old ingest receipts pruned", "count", n, "older_than", d.keep)
			}
		}
		n, err := d.drain(ctx)
		switch {
		case ctx.Err() != nil:
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_, _ = d.drain(fctx)
			cancel()
			return
		case err != nil:
			d.log.Warn("outbox not drained; the messages stay in the CMDB database and are retried", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, 5*time.Second)
			continue
		case n == outboxBatch:
			wait = 100 * time.Millisecond
			continue // more waiting
		}
		wait = 100 * time.Millisecond
		select {
		case <-ctx.Done():
		case <-d.wake:
		case <-tick.C:
		}
	}
}

// drain publishes one round of outbox rows and deletes those whose messages the stream all
// acknowledged; it returns how many rows it read.
func (d *drainer) drain(ctx context.Context) (int, error) {
	msgs, err := d.st.PendingOutbox(ctx, outboxBatch)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	rows := map[int64]int{} // messages per row
	for _, m := range msgs {
		rows[m.Seq]++
	}
	if h := beforePublish.Load(); h != nil {
		if err := (*h)(ctx, msgs); err != nil {
			return 0, err
		}
	}
	type sent struct {
		seq int64
		f   jetstream.PubAckFuture
	}
	futures := make([]sent, 0, len(msgs))
	var errs []error
	for _, m := range msgs {
		nm := &nats.Msg{Subject: m.Subject, Header: nats.Header(m.Header), Data: m.Data}
		var f jetstream.PubAckFuture
		for {
			f, err = d.js.PublishMsgAsync(nm, jetstream.WithStallWait(time.Second))
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("publish %s id %s: %w", m.Subject, m.MsgID, err))
			break // keep the order: later messages go in the next round
		}
		futures = append(futures, sent{m.Seq, f})
	}
	acks := map[int64]int{}
	timeout := time.NewTimer(outboxAckWait)
	defer timeout.Stop()
wait:
	for _, s := range futures {
		select {
		case <-s.f.Ok():
			acks[s.seq]++
		case err := <-s.f.Err():
			errs = append(errs, err)
		case <-timeout.C:
			errs = append(errs, fmt.Errorf("no ack from the stream within %s", outboxAckWait))
			break wait
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
			break wait
		}
	}
	// Rows all acknowledged leave the outbox even when the round had failures; the others
	// are published again next round (the stream drops the duplicates).
	var done []int64
	for seq, n := range rows {
		if acks[seq] == n {
			done = append(done, seq)
		}
	}
	if err := d.st.DeleteOutbox(context.WithoutCancel(ctx), done); err != nil {
		errs = append(errs, err)
	}
	return len(rows), errors.Join(errs...)
}
