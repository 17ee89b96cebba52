package ire

import (
	"context"
	"errors"
	"log/slog"

	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// Chain ingests batches one after the other, each in a transaction of its own, on a store
// that chains transactions (store.Chained, SQLite): Ingest reconciles a batch and queues its
// writes and commit, and returns at once, so that the caller reconciles the next batch
// while the writer finishes this one. Without it, the writer idled at every batch boundary
// — the commit, the acks, the next batch gathered, read and reconciled up to its first
// part — and the engine idled while the writer finished the batch's last part.
//
// The batches see what they would see one after the other: the overlay the first batch
// was reconciled through is carried to the next ones, so a batch finds what an earlier
// batch of the chain wrote whether or not its writes ran or committed yet. When a batch's
// transaction fails, every later batch of the chain fails too (they were reconciled on top
// of it) without writing anything; the caller closes the chain and ingests them again
// (IngestBatch), which also retries and splits as for any failed batch.
//
// A Chain is used by one goroutine. Between two of its transactions the store's other
// writers may take the writer connection; one that changes what the engine reads (stale
// marking, an ingest outside the chain, another process) makes the chain's next batch fail
// with store.ErrChainStale, to be ingested again like any failed batch.
type Chain struct {
	e       *Engine
	c       store.Chain
	o       *overlay
	batches int // how many batches like the first one the chain is expected to hold
	items   int
	failed  error
}

// errChainFailed refuses a batch after an earlier one of the chain failed to reconcile.
var errChainFailed = errors.New("ire: an earlier batch of the chain failed")

// Chain begins a chain of transactions, or returns nil (and no error) when the store
// does not chain them. batches is about how many batches like its first one the caller
// will ingest through it (it sizes the overlay).
func (e *Engine) Chain(ctx context.Context, batches int) (*Chain, error) {
	cs, ok := e.store.(store.Chained)
	if !ok {
		return nil, nil
	}
	c, err := cs.Chain(ctx)
	if err != nil {
		return nil, err
	}
	return &Chain{e: e, c: c, batches: batches}, nil
}

// Items is how many items the chain's batches held so far: the carried overlay holds what
// they wrote, so callers end a chain after so many.
func (c *Chain) Items() int { return c.items }

// Ingest reconciles a batch of prepared payloads (nil entries are skipped) in the chain's
// next transaction and queues its commit. wait returns the results once the transaction
// committed, or the error that failed it; then none of the batch was written.
func (c *Chain) Ingest(ctx context.Context, ps []*Prepared) (wait func() ([]Result, error)) {
	if c.failed != nil {
		err := c.failed
		return func() ([]Result, error) { return nil, err }
	}
	t := c.c.Next()
	plans := make([]*plan, 0, len(ps))
	for _, p := range ps {
		if p != nil && p.pl != nil {
			plans = append(plans, p.pl)
			c.items += len(p.pl.items)
		}
	}
	if c.o == nil {
		c.o = newOverlaySized(t, plans, c.batches)
	} else {
		c.o.tx = t
	}
	every := c.e.flushEvery
	if every == 0 {
		every = flushEvery
	}
	outs, err := c.e.reconcile(ctx, c.o, ps, plans, c.e.now().UTC(), every)
	if err != nil {
		t.Abort()
		c.failed = errChainFailed
		return func() ([]Result, error) { return nil, err }
	}
	commit := t.Commit()
	return func() ([]Result, error) {
		if err := commit(); err != nil {
			return nil, err
		}
		for i, p := range ps {
			if p != nil && p.pl != nil {
				c.e.logConflicts(p.pl, outs[i].Outcome)
			}
		}
		return outs, nil
	}
}

// Close waits for the queued transactions and releases the writer connection.
func (c *Chain) Close() error { return c.c.Close() }

// Logger is where the engine logs (conflicts, retries); callers log their batch handling there.
func (e *Engine) Logger() *slog.Logger { return e.log }
