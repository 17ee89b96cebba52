package ire

import (
	"context"
	"errors"
	"fmt"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// Result is what IngestBatch did with one payload: its outcome, or why it was not ingested.
type Result struct {
	Outcome Outcome
	Err     error
}

// Prepared is a payload that passed validation, ready for IngestBatch.
type Prepared struct{ pl *plan }

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
	switch valid {
	case 0:
		return res
	case 1:
		for i, pl := range plans {
			if pl != nil {
				res[i].Outcome, res[i].Err = e.ingest(ctx, pl)
			}
		}
		return res
	}
	now := e.now().UTC()
	outs := make([]Outcome, len(ps))
	err := e.store.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		for i, pl := range plans {
			if pl == nil {
				continue
			}
			o, err := newRun(e, pl, now).run(ctx, tx)
			if err != nil {
				return err
			}
			outs[i] = o
		}
		return nil
	})
	if err != nil {
		e.log.Debug("batch ingest failed, ingesting its payloads one by one", "payloads", valid, "err", err)
		for i, pl := range plans {
			if pl != nil {
				res[i].Outcome, res[i].Err = e.ingest(ctx, pl)
			}
		}
		return res
	}
	for i, pl := range plans {
		if pl == nil {
			continue
		}
		res[i].Outcome = outs[i]
		e.logConflicts(pl, outs[i])
	}
	return res
}

// ingest writes one validated payload in a transaction of its own.
func (e *Engine) ingest(ctx context.Context, pl *plan) (Outcome, error) {
	now := e.now().UTC()
	var out Outcome
	attempts := 0
	err := e.store.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		attempts++
		o, err := newRun(e, pl, now).run(ctx, tx)
		if err != nil {
			return err
		}
		out = o
		return nil
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("ire: ingest from %s: %w", pl.source, err)
	}
	if attempts > 1 {
		e.log.Debug("ingest retried", "source", pl.source, "attempts", attempts)
	}
	e.logConflicts(pl, out)
	return out, nil
}

func (e *Engine) logConflicts(pl *plan, out Outcome) {
	for _, c := range out.Conflicts {
		e.log.Info("identification conflict", "source", pl.source, "ref", c.Ref, "class", c.Class, "reason", c.Reason)
	}
}
