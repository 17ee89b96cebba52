package orchestration

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// journal is the group commit of everything the engine writes to JetStream: history
// appends, snapshots and probes. A write waits for its own ack, as a synchronous publish
// does, but the journal sends whatever writers are waiting together as asynchronous
// publishes and collects their acks together, one wait per batch: while one batch is on
// its way the next one gathers. With a thousand runs in flight a step costs a share of a
// round trip instead of three.
//
// Ordering is the writers' business, and they keep it by waiting: a run appends its next
// record only once the previous one is acked (the append names the sequence it expects),
// and it publishes a step's probe only once the record of the attempt is acked — so a
// batch of records is on disk before the batch of probes that depends on it leaves.
type journal struct {
	js      jetstream.JetStream
	in      chan []*write
	stopped chan struct{}
	// batches and writes count what the journal sent (the benchmark reports writes/batch).
	batches, writes atomic.Int64
	busy            atomic.Int64 // ns spent awaiting acks
}

// write is one message for the journal and, once done is closed, its outcome.
type write struct {
	msg  *nats.Msg
	opts []jetstream.PublishOpt
	ack  *jetstream.PubAck
	err  error
	done chan struct{}
	// future is the pending ack of the write once sent
	future jetstream.PubAckFuture
}

// maxBatch bounds one batch: the client's async window (4,000 by default) stays free for
// whatever else the connection sends.
const maxBatch = 1024

// journalAckTimeout bounds the wait for one batch's acks: a connection that dropped
// mid-batch fails the writes of the batch instead of hanging their runs.
const journalAckTimeout = 10 * time.Second

var errJournalStopped = errors.New("the orchestration service is stopping: nothing more is written")

func newJournal(js jetstream.JetStream) *journal {
	return &journal{js: js, in: make(chan []*write), stopped: make(chan struct{})}
}

// run sends batches until ctx ends; writes submitted after that fail with errJournalStopped.
// One goroutine sends, another awaits the acks of what was sent, batch after batch: a
// batch goes out while the acks of the ones before it are still on their way.
func (j *journal) run(ctx context.Context) {
	sent := make(chan []*write, 16)
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		for batch := range sent {
			j.await(batch)
		}
	}()
	defer func() {
		close(sent)
		<-acked
		close(j.stopped)
	}()
	for {
		var batch []*write
		select {
		case ws := <-j.in:
			batch = append(make([]*write, 0, 64), ws...)
		case <-ctx.Done():
			return
		}
	gather:
		for len(batch) < maxBatch {
			select {
			case ws := <-j.in:
				batch = append(batch, ws...)
			default:
				break gather
			}
		}
		for _, w := range batch {
			opts := append(w.opts, jetstream.WithStallWait(journalAckTimeout))
			if w.future, w.err = j.js.PublishMsgAsync(w.msg, opts...); w.err != nil {
				w.future = nil
			}
		}
		j.batches.Add(1)
		j.writes.Add(int64(len(batch)))
		sent <- batch
	}
}

// await collects the acks of one batch, in order, and hands each write its outcome.
func (j *journal) await(batch []*write) {
	t0 := time.Now()
	timeout := time.NewTimer(journalAckTimeout)
	defer timeout.Stop()
	for _, w := range batch {
		if f := w.future; f != nil {
			select {
			case ack := <-f.Ok():
				w.ack = ack
			case err := <-f.Err():
				w.err = err
			case <-timeout.C:
				w.err = fmt.Errorf("no ack within %s", journalAckTimeout)
				timeout.Reset(0) // the rest of the batch had as long
			}
		}
		close(w.done)
	}
	j.busy.Add(int64(time.Since(t0)))
}

// submit hands writes to the journal, to go in one batch (each one's done is closed once
// it has an outcome).
func (j *journal) submit(ws ...*write) {
	for _, w := range ws {
		w.done = make(chan struct{})
	}
	select {
	case j.in <- ws:
	case <-j.stopped:
		for _, w := range ws {
			w.err = errJournalStopped
			close(w.done)
		}
	}
}

// publish writes one message and waits for its ack.
func (j *journal) publish(msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	w := &write{msg: msg, opts: opts}
	j.submit(w)
	<-w.done
	if w.err != nil {
		return nil, fmt.Errorf("publish %s: %w", msg.Subject, w.err)
	}
	return w.ack, nil
}

// publishAll writes messages together and waits for every ack; errs[i] is msgs[i]'s.
func (j *journal) publishAll(msgs []*nats.Msg) []error {
	ws := make([]*write, len(msgs))
	for i, m := range msgs {
		ws[i] = &write{msg: m}
	}
	j.submit(ws...)
	errs := make([]error, len(msgs))
	for i, w := range ws {
		<-w.done
		if w.err != nil {
			errs[i] = fmt.Errorf("publish %s: %w", msgs[i].Subject, w.err)
		}
	}
	return errs
}
