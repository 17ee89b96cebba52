package ire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// Result is what IngestBatch did with one payload: its outcome, or why it was not ingested.
type Result struct {
	Outcome Outcome
	Err     error
	// Replayed: the payload's key had a stored receipt, so it was ingested before (a
	// redelivery after the commit); nothing was reconciled again and Receipt is the stored
	// one, Outcome is empty.
	Replayed bool
	Receipt  string
}

// Prepared is a payload that passed validation, ready for IngestBatch.
type Prepared struct {
	pl      *plan
	key     string
	effects Effects
	replay  Replay
}

// Effects returns what an ingest announces — its receipt, kept under the payload's key,
// and the messages to publish — from its outcome. It runs inside the ingest's transaction,
// so the announcements commit, or not, with the changes (transactional outbox).
type Effects func(out Outcome) (receipt string, msgs []store.OutboxMsg, err error)

// Replay returns the messages to publish again for a payload ingested before, from its
// stored receipt.
type Replay func(receipt string) ([]store.OutboxMsg, error)

// Announce makes the ingest of p write effects in its transaction. With a key (the payload's
// id), the receipt is stored, and a later ingest of the same key reconciles nothing: it
// gets the stored receipt back (Result.Replayed) and publishes what replay returns, so that
// a payload redelivered after its commit is answered with what it did, not "unchanged".
func (p *Prepared) Announce(key string, effects Effects, replay Replay) {
	p.key, p.effects, p.replay = key, effects, replay
}

// Items is how many items the payload holds (what a batch's size is measured in).
func (p *Prepared) Items() int { return len(p.pl.items) }

// Prepare validates a payload without touching the store: a *ValidationError (errors.Is
// ErrInvalid) when it can never be ingested. Callers validate before batching, so that a bad
// payload is refused alone and validation stays off the store's critical path.
func (e *Engine) Prepare(p envelope.CIPayload) (*Prepared, error) {
	pl, err := e.validate(p)
	if err != nil {
		return nil, err
	}
	return &Prepared{pl: pl}, nil
}

// IngestBatch ingests prepared payloads in one store transaction, one after the other,
// each exactly as Ingest would alone (a later payload sees what an earlier one wrote), and
// returns one Result per payload, in order.
//
// Why: a transaction's begin and commit (and on SQLite, its turn at the single writer)
// cost as much as reconciling a small payload; an import of thousands of payloads spends
// them once per batch instead of once per payload.
//
// When the shared transaction fails for a reason that retrying does not cure, the batch is
// split: every payload is ingested in a transaction of its own, so that one payload the
// store refuses cannot fail the ones it was grouped with, and each gets its own error.
func (e *Engine) IngestBatch(ctx context.Context, ps []*Prepared) []Result {
	res := make([]Result, len(ps))
	plans := make([]*plan, len(ps))
	valid := 0
	for i, p := range ps {
		if p == nil || p.pl == nil {
			res[i].Err = errors.New("ire: ingest batch: payload not prepared (call Prepare)")
			continue
		}
		plans[i] = p.pl
		valid++
	}
	if valid == 0 {
		return res
	}
	if valid > 1 {
		outs, err := e.inTx(ctx, ps)
		if err == nil {
			for i, p := range ps {
				if plans[i] != nil {
					res[i] = outs[i]
					e.logConflicts(p.pl, outs[i].Outcome)
				}
			}
			return res
		}
		e.log.Debug("batch ingest failed, ingesting its payloads one by one", "payloads", valid, "err", err)
	}
	for i, p := range ps {
		if plans[i] != nil {
			res[i] = e.ingest(ctx, p)
		}
	}
	return res
}

// inTx ingests payloads one after the other in one transaction (nil entries are skipped).
func (e *Engine) inTx(ctx context.Context, ps []*Prepared) ([]Result, error) {
	now := e.now().UTC()
	var outs []Result
	update, every := e.store.Update, e.flushEvery
	if p, ok := e.store.(store.Pipelined); ok {
		update = p.UpdatePipelined
		if every == 0 {
			every = flushEvery
		}
	}
	err := update(ctx, func(ctx context.Context, dbtx store.Tx) error {
		plans := make([]*plan, 0, len(ps))
		for _, p := range ps {
			if p != nil {
				plans = append(plans, p.pl)
			}
		}
		var err error
		outs, err = e.reconcile(ctx, newOverlay(dbtx, plans), ps, plans, now, every) // a retried transaction starts over
		return err
	})
	return outs, err
}

// reconcile reconciles payloads one after the other through tx (nil entries are skipped)
// and writes them: parts every so many CIs and relations (every > 0), the rest, the
// conflicts, outbox and receipts at the end.
func (e *Engine) reconcile(ctx context.Context, tx *overlay, ps []*Prepared, plans []*plan, now time.Time, every int) ([]Result, error) {
	outs := make([]Result, len(ps))
	if err := tx.prefetch(ctx, plans); err != nil {
		return nil, err
	}
	var keys []string
	for _, p := range ps {
		if p != nil && p.pl != nil && p.key != "" {
			keys = append(keys, p.key)
		}
	}
	receipts := map[string]string{}
	if len(keys) > 0 {
		var err error
		if receipts, err = tx.LoadReceipts(ctx, keys); err != nil {
			return nil, err
		}
	}
	var replayed store.Batch
	for i, p := range ps {
		if p == nil || p.pl == nil {
			continue
		}
		if rc, ok := receipts[p.key]; ok && p.key != "" {
			outs[i] = Result{Replayed: true, Receipt: rc}
			if p.replay != nil {
				msgs, err := p.replay(rc)
				if err != nil {
					return nil, err
				}
				replayed.Outbox = append(replayed.Outbox, msgs...)
			}
			continue
		}
		r := newRun(e, p.pl, now)
		if p.effects != nil {
			r.after = func(out Outcome, b *store.Batch) error {
				rc, msgs, err := p.effects(out)
				if err != nil {
					return err
				}
				b.Outbox = append(b.Outbox, msgs...)
				if p.key != "" {
					b.Receipts = append(b.Receipts, store.ReceiptRow{Payload: p.key, Body: rc, Created: now})
					receipts[p.key] = rc // a copy later in the batch replays it
					outs[i].Receipt = rc
				}
				return nil
			}
		}
		o, err := r.run(ctx, tx)
		if err != nil {
			return nil, err
		}
		outs[i].Outcome = o
		if every > 0 && tx.pending() >= every {
			if err := tx.flushPart(ctx); err != nil {
				return nil, err
			}
		}
	}
	if !replayed.Empty() {
		if err := tx.Write(ctx, &replayed); err != nil {
			return nil, err
		}
	}
	if err := tx.flush(ctx); err != nil {
		return nil, err
	}
	return outs, nil
}

// flushEvery is how many CIs and relations a pipelined batch reconciles before it hands
// them to the writer: small enough that the writer starts early and the engine and the
// writer work side by side, large enough that a multi-row INSERT holds many rows (with
// 128, a flush per 100-CI payload, the process spent about a fifth more CPU per CI than
// with 512 or more: more, smaller statements).
const flushEvery = 512

// ingest writes one prepared payload in a transaction of its own.
func (e *Engine) ingest(ctx context.Context, p *Prepared) Result {
	outs, err := e.inTx(ctx, []*Prepared{p})
	if err != nil {
		return Result{Err: fmt.Errorf("ire: ingest from %s: %w", p.pl.source, err)}
	}
	e.logConflicts(p.pl, outs[0].Outcome)
	return outs[0]
}

func (e *Engine) logConflicts(pl *plan, out Outcome) {
	for _, c := range out.Conflicts {
		e.log.Info("identification conflict", "source", pl.source, "ref", c.Ref, "class", c.Class, "reason", c.Reason)
	}
}
