package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Chained is a store whose write transactions can follow one another on one connection
// without a pause between them (SQLite).
//
// A Chain runs transactions one after the other, each committed on its own: a caller
// reconciles the next batch while the previous batch's last writes and its commit still run
// on the writer. Why: with one transaction at a time, the single writer idled at every
// batch's boundary (commit, acks, the next batch's reads and its first part reconciled
// before its first write) and the engine idled while the writer finished a batch.
//
// What the caller reads through a ChainTx is the committed state plus whichever of the
// chain's queued writes — of its own transaction or of earlier ones, committed or not —
// already ran: the caller keeps what it wrote in the whole chain and completes its reads
// with it (the engine's overlay, carried from one batch to the next). When a transaction of
// the chain fails, every later one fails too, without writing anything (they were
// reconciled on top of what failed), and the caller redoes them.
type Chained interface {
	Chain(ctx context.Context) (Chain, error)
}

// Chain is a sequence of transactions on the store's writer connection. Other writers of
// the store get the connection only between two of its transactions, when they are
// already waiting (database/sql hands a released connection to the oldest waiter), so
// callers keep chains short.
type Chain interface {
	// Next begins the chain's next transaction (queued after the previous one's commit).
	Next() ChainTx
	// Close waits for the queued work and rolls back a transaction left open (one whose
	// commit was never queued).
	Close() error
}

// ChainTx is one transaction of a Chain. Write queues the writes (Pipelined semantics); an
// error of a queued write is returned by a later Write and by the commit.
type ChainTx interface {
	Tx
	// Commit queues the commit and returns the function waiting for its outcome.
	Commit() (wait func() error)
	// Abort rolls the transaction back (queued) and ends the chain: later transactions fail.
	Abort()
}

// ErrChainStale is the error of a chained transaction that began after another writer —
// another connection, or another transaction of this store between two of the chain's
// (stale marking, an ingest outside the batcher) — changed the database since the chain
// began: what the caller read in the chain may be out of date, so it must redo the
// transaction (outside the chain).
var ErrChainStale = errors.New("store: the database changed under a chain of transactions")

// errChainAborted ends a chain whose caller aborted a transaction.
var errChainAborted = errors.New("store: an earlier transaction of the chain was aborted")

type chainOpKind uint8

const (
	opBegin chainOpKind = iota
	opExec
	opCommit
	opAbort
)

type chainOp struct {
	kind chainOpKind
	tx   *chainTx
	prog []statement
	done chan error // opCommit
}

// chainDepth bounds the operations queued for the writer: the caller runs at most that
// far ahead (a part of a batch holds up to 512 CIs and relations).
const chainDepth = 8

type chain struct {
	s   *sqlStore
	ctx context.Context
	// mu makes a read's whole query (statement, rows, close) and each of the writer's
	// steps take turns: database/sql serializes the driver calls one by one, which would
	// let a COMMIT run between two rows of a read.
	mu sync.Mutex
	// cur is the open transaction, nil between two (guarded by mu). Each is a *sql.Tx of
	// the writer pool's one connection, so the store's insert statements, prepared once on
	// it (prepareInserts), are reused; a chain on a *sql.Conn of its own prepared them
	// again for every chain, which an import — a chain per batch — paid for.
	cur     *sql.Tx
	ops     chan chainOp
	done    chan struct{}
	version int64 // PRAGMA data_version when the chain began
	writes  int64 // the store's counted transactions (sqlStore.writes) when it began
	begun   bool  // Next has handed out the transaction Chain began
	closed  bool
}

// Chain begins a chain and its first transaction (at once: every read of the chain
// happens under the write lock, or is checked by data_version at the next BEGIN).
func (s *sqliteStore) Chain(ctx context.Context) (Chain, error) {
	c := &chain{s: s.sqlStore, ctx: ctx, ops: make(chan chainOp, chainDepth), done: make(chan struct{})}
	t, err := s.w.BeginTx(ctx, nil) // IMMEDIATE (the writer's _txlock)
	if err != nil {
		return nil, fmt.Errorf("store: begin: %w", err)
	}
	c.cur = t
	c.writes = s.writes.Load()
	if c.version, err = c.dataVersion(); err != nil {
		_ = t.Rollback()
		return nil, err
	}
	go c.run()
	return c, nil
}

// dataVersion changes when another connection commits to the database (not when this
// one does). It runs in cur.
func (c *chain) dataVersion() (int64, error) {
	var v int64
	if err := c.cur.QueryRowContext(c.ctx, "PRAGMA data_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("store: chain: data_version: %w", err)
	}
	return v, nil
}

func (c *chain) Next() ChainTx {
	t := &chainTx{c: c}
	t.tx = tx{s: c.s, q: chainReader{c}}
	if !c.begun {
		c.begun = true // Chain began it
		return t
	}
	c.ops <- chainOp{kind: opBegin, tx: t}
	return t
}

func (c *chain) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.ops)
	<-c.done
	return nil
}

// run is the writer: it executes the queued operations in order. After a failure it
// rolls back and only drains; every later transaction gets the failure.
func (c *chain) run() {
	defer close(c.done)
	var broken error
	rollback := func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.cur != nil {
			_ = c.cur.Rollback()
			c.cur = nil
		}
	}
	fail := func(t *chainTx, err error) {
		t.setErr(err)
		if broken == nil {
			broken = err
		}
		rollback()
	}
	for op := range c.ops {
		switch op.kind {
		case opBegin:
			if broken != nil {
				op.tx.setErr(fmt.Errorf("store: chain: an earlier transaction failed: %w", broken))
				continue
			}
			if err := c.begin(); err != nil {
				fail(op.tx, err)
			}
		case opExec:
			if broken != nil || op.tx.failed.Load() {
				continue
			}
			for _, st := range op.prog {
				if err := c.exec(st.text, st.args); err != nil {
					fail(op.tx, fmt.Errorf("%s: %w", st.what, err))
					break
				}
			}
		case opCommit:
			if err := op.tx.writeErr(); err != nil {
				op.done <- err
				continue
			}
			if broken != nil {
				op.done <- fmt.Errorf("store: chain: an earlier transaction failed: %w", broken)
				continue
			}
			if err := c.commit(); err != nil {
				err = fmt.Errorf("store: commit: %w", err)
				fail(op.tx, err)
				op.done <- err
				continue
			}
			op.done <- nil
		case opAbort:
			if broken == nil {
				broken = errChainAborted
			}
			rollback()
		}
	}
	rollback()
}

// begin opens the next transaction and checks that no other connection committed since
// the chain began.
func (c *chain) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, err := c.s.w.BeginTx(c.ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	c.cur = t
	v, err := c.dataVersion()
	if err != nil {
		return err
	}
	if v != c.version || c.s.writes.Load() != c.writes {
		return ErrChainStale
	}
	return nil
}

func (c *chain) commit() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.cur.Commit()
	if err == nil {
		c.cur = nil
	}
	return err
}

// exec runs one statement of a compiled write in cur.
func (c *chain) exec(text string, args []any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.s.exec(c.ctx, c.cur, text, args)
}

// chainReader runs a chain's reads in its open transaction, or between two on the writer
// pool (its one connection is then free, or briefly another writer's). Its caller holds mu.
type chainReader struct{ c *chain }

func (r chainReader) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if r.c.cur != nil {
		return r.c.cur.QueryContext(ctx, query, args...)
	}
	return r.c.s.w.QueryContext(ctx, query, args...)
}

// chainTx reads on the chain's connection, a whole query at a time, and queues its writes.
type chainTx struct {
	tx
	c      *chain
	failed atomic.Bool
	errMu  sync.Mutex
	err    error
}

func (t *chainTx) setErr(err error) {
	t.errMu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.errMu.Unlock()
	t.failed.Store(true)
}

func (t *chainTx) writeErr() error {
	if !t.failed.Load() {
		return nil
	}
	t.errMu.Lock()
	defer t.errMu.Unlock()
	return t.err
}

func (t *chainTx) LookupIdentifiers(ctx context.Context, keys []Key) (map[Key]string, error) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.tx.LookupIdentifiers(ctx, keys)
}

func (t *chainTx) IdentifiersOf(ctx context.Context, ciIDs []string) (map[string][]Key, error) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.tx.IdentifiersOf(ctx, ciIDs)
}

func (t *chainTx) LoadCIs(ctx context.Context, ids []string) (map[string]*CIState, error) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.tx.LoadCIs(ctx, ids)
}

func (t *chainTx) LoadRelations(ctx context.Context, fromIDs []string) ([]RelationRow, error) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.tx.LoadRelations(ctx, fromIDs)
}

func (t *chainTx) LoadReceipts(ctx context.Context, keys []string) (map[string]string, error) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.tx.LoadReceipts(ctx, keys)
}

// Write compiles b on the caller's goroutine and queues it. It returns the error of an
// earlier write of this transaction once the writer stopped on it.
func (t *chainTx) Write(ctx context.Context, b *Batch) error {
	if err := t.writeErr(); err != nil {
		return err
	}
	prog := t.s.compile(b)
	select {
	case t.c.ops <- chainOp{kind: opExec, tx: t, prog: prog}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *chainTx) Commit() func() error {
	done := make(chan error, 1)
	t.c.ops <- chainOp{kind: opCommit, tx: t, done: done}
	return func() error { return <-done }
}

func (t *chainTx) Abort() { t.c.ops <- chainOp{kind: opAbort, tx: t} }
