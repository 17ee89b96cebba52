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

// Chain is a sequence of transactions on the store's writer connection, which it holds
// until Close: other writers of the store wait for it, so callers keep chains short.
type Chain interface {
	// Next begins the chain's next transaction (queued after the previous one's commit).
	Next() ChainTx
	// Close waits for the queued work, rolls back a transaction left open and releases
	// the connection.
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

// ErrChainStale is the error of a chained transaction that began after another
// connection committed to the database since the chain began: what the caller read in the
// chain may be out of date, so it must redo the transaction (outside the chain).
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
	s    *sqlStore
	ctx  context.Context
	conn *sql.Conn
	// mu makes a read's whole query (statement, rows, close) and each of the writer's
	// statements take turns on the connection: database/sql serializes the driver calls
	// one by one, which would let a COMMIT run between two rows of a read.
	mu      sync.Mutex
	ops     chan chainOp
	done    chan struct{}
	stmts   map[string]*sql.Stmt // the insert texts, prepared on conn when first used
	version int64                // PRAGMA data_version when the chain began
	begun   bool                 // Next has handed out the transaction Chain began
	closed  bool
}

// Chain begins a chain and its first transaction (at once: every read of the chain
// happens under the write lock, or is checked by data_version at the next BEGIN).
func (s *sqliteStore) Chain(ctx context.Context) (Chain, error) {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: chain: %w", err)
	}
	c := &chain{s: s.sqlStore, ctx: ctx, conn: conn, ops: make(chan chainOp, chainDepth), done: make(chan struct{}), stmts: map[string]*sql.Stmt{}}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("store: begin: %w", err)
	}
	if c.version, err = c.dataVersion(); err != nil {
		_, _ = conn.ExecContext(ctx, "ROLLBACK")
		_ = conn.Close()
		return nil, err
	}
	go c.run()
	return c, nil
}

// dataVersion changes when another connection commits to the database (not when this
// one does).
func (c *chain) dataVersion() (int64, error) {
	var v int64
	if err := c.conn.QueryRowContext(c.ctx, "PRAGMA data_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("store: chain: data_version: %w", err)
	}
	return v, nil
}

func (c *chain) Next() ChainTx {
	t := &chainTx{c: c}
	t.tx = tx{s: c.s, q: c.conn}
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
	var errs []error
	for _, st := range c.stmts {
		errs = append(errs, st.Close())
	}
	return errors.Join(append(errs, c.conn.Close())...)
}

// run is the writer: it executes the queued operations in order. After a failure it
// rolls back and only drains; every later transaction gets the failure.
func (c *chain) run() {
	defer close(c.done)
	open := true // Chain began the first transaction
	var broken error
	rollback := func() {
		if open {
			_ = c.execText("ROLLBACK")
			open = false
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
			if err := c.execText("BEGIN IMMEDIATE"); err != nil {
				fail(op.tx, fmt.Errorf("store: begin: %w", err))
				continue
			}
			open = true
			if v, err := c.dataVersion(); err != nil {
				fail(op.tx, err)
			} else if v != c.version {
				fail(op.tx, ErrChainStale)
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
			if err := c.execText("COMMIT"); err != nil {
				err = fmt.Errorf("store: commit: %w", err)
				fail(op.tx, err)
				op.done <- err
				continue
			}
			open = false
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

func (c *chain) execText(text string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.conn.ExecContext(c.ctx, text)
	return err
}

// exec runs one statement of a compiled write, the store's insert texts prepared on the
// chain's connection once (a *sql.Stmt of the connection: no per-execution statement
// wrapper as a transaction's StmtContext makes).
func (c *chain) exec(text string, args []any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.stmts[text]
	if !ok && c.s.stmts[text] != nil {
		var err error
		if st, err = c.conn.PrepareContext(c.ctx, text); err != nil {
			return err
		}
		c.stmts[text] = st
	}
	var err error
	if st != nil {
		_, err = st.ExecContext(c.ctx, args...)
	} else {
		_, err = c.conn.ExecContext(c.ctx, text, args...)
	}
	return err
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
