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

func (b *batcher) work(ctx context.Context) {
	batch := make([]*batchReq, 0, b.max)
	ps := make([]*ire.Prepared, 0, b.max)
	timer := time.NewTimer(linger)
	timer.Stop()
	var ended time.Time // when the previous transaction ended
	for {
		batch, ps = batch[:0], ps[:0]
		select {
		case <-ctx.Done():
			return
		case r := <-b.reqs:
			batch = append(batch, r)
		}
		busy := time.Since(ended) < linger
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
		for _, r := range batch {
			ps = append(ps, r.p)
		}
		// The batch's transaction is not tied to one handler's context: it is written
		// once for all of them, and a handler that gave up is redelivered (idempotent).
		res := b.eng.IngestBatch(context.WithoutCancel(ctx), ps)
		ended = time.Now()
		for i, r := range batch {
			r.done <- res[i]
		}
	}
}

// wait returns once every worker has ended (after ctx ended).
func (b *batcher) wait() { b.wg.Wait() }
