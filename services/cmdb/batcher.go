package cmdb

import (
	"context"
	"sync"
	"time"

	"github.com/outpost-dev/outpost/services/cmdb/ire"
)

// batcher groups the payloads that partitions hand in at the same time into one ingest
// transaction (group commit): while a batch is in the store, the payloads that arrive
// queue up and go together into the next one. Nothing waits for a batch to fill: a lone
// payload reaching an idle worker is ingested at once; a busy worker waits at most linger
// for more, so under load batches grow and latency grows by no more than that.
//
// Every payload still has its own message, ack, receipt and outcome; a payload that fails
// validation never joins a batch (it is dead-lettered alone, see onPayload), and a batch
// whose transaction fails is split into payloads of their own (ire.Engine.IngestBatch).
type batcher struct {
	eng      *ire.Engine
	max      int // payloads per transaction
	maxItems int // items per transaction
	reqs     chan *batchReq
	wg       sync.WaitGroup
}

type batchReq struct {
	p    *ire.Prepared
	done chan ire.Result // buffered: the worker never blocks on a handler that gave up
}

// newBatcher starts workers goroutines that each take whatever payloads are waiting and
// ingest them together, until ctx ends. SQLite has one writer, so one worker there;
// PostgreSQL takes concurrent transactions, so a few.
func newBatcher(ctx context.Context, eng *ire.Engine, workers, maxBatch int) *batcher {
	maxBatch = max(1, maxBatch)
	b := &batcher{eng: eng, max: maxBatch, maxItems: maxBatchItems / max(1, workers), reqs: make(chan *batchReq, maxBatch)}
	for range max(1, workers) {
		b.wg.Add(1)
		go func() { defer b.wg.Done(); b.work(ctx) }()
	}
	return b
}

// ingest reconciles p with whatever else is waiting and returns its own result. When ctx
// ends first, the payload may still be written: its redelivery is idempotent.
func (b *batcher) ingest(ctx context.Context, p *ire.Prepared) (ire.Result, error) {
	r := &batchReq{p: p, done: make(chan ire.Result, 1)}
	select {
	case b.reqs <- r:
	case <-ctx.Done():
		return ire.Result{}, ctx.Err()
	}
	select {
	case res := <-r.done:
		return res, res.Err
	case <-ctx.Done():
		return ire.Result{}, ctx.Err()
	}
}

// maxBatchItems bounds the items of one transaction too (divided among the workers): an
// import's one-row payloads fill a batch by count, while 512 discovery payloads of a hundred
// CIs each would make one transaction hold the writer for seconds and the process hold all
// of it in memory; with several workers (PostgreSQL), smaller batches keep them all busy.
const maxBatchItems = 4096

// linger is how long a worker that is busy — its previous transaction ended just before the
// next payload arrived — waits for more payloads before it writes a batch smaller than max.
// Without it, the payloads acked together by one commit come back one by one and each
// first one would be written alone: most transactions held one payload under a steady
// import. A worker that was idle writes a lone payload at once.
const linger = time.Millisecond

// chainItems bounds the items of one chain of transactions (ire.Chain): its overlay holds
// what every batch of the chain wrote (memory), and a write of the store outside the chain
// (stale marking) makes the chain's next batch start over (store.ErrChainStale).
const chainItems = 16384

// inFlight is a batch whose transaction is queued in a chain: reconciled, not yet committed.
type inFlight struct {
	batch []*batchReq
	ps    []*ire.Prepared
	wait  func() ([]ire.Result, error)
}

// work gathers batches and ingests them. On a store that chains transactions (SQLite),
// a batch is reconciled while the previous one's writes and commit still run, and each
// batch's results — the acks — are handed out once its own commit is done. When a batch
// of the chain fails, the chain ends and that batch and the one reconciled on top of it
// are ingested again on their own (IngestBatch: retried, split payload by payload).
func (b *batcher) work(ctx context.Context) {
	timer := time.NewTimer(linger)
	timer.Stop()
	wctx := context.WithoutCancel(ctx) // see below: a batch is written for all its handlers
	var ended time.Time                // when the previous transaction ended
	var ch *ire.Chain
	var prev *inFlight
	closeChain := func() {
		if ch != nil {
			// The chain's work is done (waited for) or failed: what Close reports is the
			// connection's release, which the store's next writer would meet anyway.
			_ = ch.Close()
			ch = nil
		}
	}
	deliver := func(batch []*batchReq, res []ire.Result) {
		ended = time.Now()
		for i, r := range batch {
			r.done <- res[i]
		}
	}
	redo := func(f *inFlight) { deliver(f.batch, b.eng.IngestBatch(wctx, f.ps)) }
	// finish waits for prev's commit and hands out its results; false when it failed
	// (nothing of it was written).
	finish := func() bool {
		f := prev
		prev = nil
		res, err := f.wait()
		if err != nil {
			closeChain()
			b.eng.Logger().Debug("chained batch failed, ingesting it again", "payloads", len(f.ps), "err", err)
			redo(f)
			return false
		}
		deliver(f.batch, res)
		return true
	}
	for {
		batch := b.gather(ctx, timer, prev == nil, prev != nil || time.Since(ended) < linger)
		if len(batch) == 0 { // nothing more came while prev commits, or ctx ended
			if prev != nil {
				finish()
			}
			closeChain()
			if ctx.Err() != nil {
				return
			}
			continue
		}
		ps := make([]*ire.Prepared, len(batch))
		for i, r := range batch {
			ps[i] = r.p
		}
		if ch == nil {
			// The batch's transaction is not tied to one handler's context: it is written
			// once for all of them, and a handler that gave up is redelivered (idempotent).
			// Sized for the batches the chain will hold when they are like this one.
			items := 0
			for _, p := range ps {
				items += p.Items()
			}
			c, err := b.eng.Chain(wctx, min(chainItems/max(1, items), 8))
			if err != nil {
				b.eng.Logger().Debug("no chain of transactions, ingesting the batch alone", "err", err)
			}
			ch = c
		}
		if ch == nil { // PostgreSQL, or the chain could not begin
			deliver(batch, b.eng.IngestBatch(wctx, ps))
			continue
		}
		cur := &inFlight{batch: batch, ps: ps, wait: ch.Ingest(wctx, ps)}
		if prev != nil && !finish() {
			// cur was reconciled on top of what failed, and its transaction fails with it.
			redo(cur)
			continue
		}
		prev = cur
		if ch.Items() >= chainItems {
			finish()
			closeChain()
		}
	}
}

// gather takes the payloads waiting, up to a batch: it waits for the first one when block
// (else returns none when none is waiting), and up to linger for more when busy. It
// returns none when ctx ended.
func (b *batcher) gather(ctx context.Context, timer *time.Timer, block, busy bool) []*batchReq {
	var batch []*batchReq
	if block {
		select {
		case <-ctx.Done():
			return nil
		case r := <-b.reqs:
			batch = append(make([]*batchReq, 0, b.max), r)
		}
	} else {
		select {
		case r := <-b.reqs:
			batch = append(make([]*batchReq, 0, b.max), r)
		default:
			return nil
		}
	}
	items := batch[0].p.Items()
	full := func() bool { return len(batch) >= b.max || items >= b.maxItems }
more:
	for !full() {
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
			items += r.p.Items()
		default:
			break more
		}
	}
	if busy && !full() {
		timer.Reset(linger)
	wait:
		for !full() {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
				items += r.p.Items()
			case <-timer.C:
				break wait
			case <-ctx.Done():
				break wait
			}
		}
		timer.Stop()
	}
	return batch
}

// wait returns once every worker has ended (after ctx ended).
func (b *batcher) wait() { b.wg.Wait() }
