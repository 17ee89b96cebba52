package store

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"time"
)

// analyzer keeps PostgreSQL's planner statistics in step with bulk writes. Autovacuum
// analyzes a table once a tenth of it changed, a minute or more later; after an import into
// a small CMDB the planner meanwhile plans with the empty tables' statistics. Measured at
// 100,000 CIs right after they were written: a list with a class, a filter on a common value
// and a search estimated 12 index entries where there were 33,334, drove a nested loop from
// them and took 400–700 ms; after ANALYZE, 0.5–1.2 ms (BenchmarkServiceList/postgres,
// class+filter+search). So the store analyzes its tables itself, in the background, each
// time the CIs it created since the last time reach the CIs there were then (at least
// analyzeMin; a CI's index entries and identifiers grow with it): the statistics are never
// off by more than a doubling, and a large import analyzes a few times (20k, 40k, 80k…
// CIs), not per batch. Only the tables lists plan on: relations are read by their keys,
// whose plans do not depend on the statistics. SQLite's planner does not use such
// statistics for these queries; it has no analyzer.
type analyzer struct {
	db      *sql.DB
	pending atomic.Int64 // CIs created since the last ANALYZE began
	base    atomic.Int64 // CIs there were when it began (estimated at open)
	running atomic.Bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// analyzed counts the ANALYZE runs that completed, failed those that did not: a failed
	// one changes nothing (autovacuum still analyzes later) and is tried again after as many
	// CIs again.
	analyzed, failed atomic.Int64
}

// analyzeMin is the fewest CIs created that make the store analyze (a variable for tests).
var analyzeMin int64 = 20_000

// analyzeTimeout bounds one ANALYZE of the CMDB's tables.
const analyzeTimeout = 5 * time.Minute

// newAnalyzer starts from the tables' size as PostgreSQL estimates it (pg_class.reltuples,
// -1 when never analyzed).
func newAnalyzer(ctx context.Context, db *sql.DB) *analyzer {
	a := &analyzer{db: db}
	var n sql.NullFloat64
	if err := db.QueryRowContext(ctx, `SELECT SUM(GREATEST(reltuples, 0)) FROM pg_class
		WHERE relname = 'cis' AND relkind = 'r' AND pg_table_is_visible(oid)`).Scan(&n); err == nil {
		a.base.Store(int64(n.Float64))
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	return a
}

// wrote notes the CIs a committed transaction created and starts an
// ANALYZE when they add up; one runs at a time.
func (a *analyzer) wrote(cis int) {
	if a == nil || cis <= 0 {
		return
	}
	p := a.pending.Add(int64(cis))
	if p < max(analyzeMin, a.base.Load()) || !a.running.CompareAndSwap(false, true) {
		return
	}
	a.pending.Add(-p)
	a.base.Add(p)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer a.running.Store(false)
		ctx, cancel := context.WithTimeout(a.ctx, analyzeTimeout)
		defer cancel()
		if _, err := a.db.ExecContext(ctx, "ANALYZE cis, ci_index, ci_identifiers"); err != nil {
			a.failed.Add(1)
			a.base.Add(-p)
			a.pending.Add(p) // counted again towards the next one
			return
		}
		a.analyzed.Add(1)
	}()
}

// close stops a running ANALYZE (its statistics are then left as they were) and waits.
func (a *analyzer) close() {
	if a == nil {
		return
	}
	a.cancel()
	a.wg.Wait()
}
