package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// dialect holds what differs between SQLite and PostgreSQL; everything else is shared.
type dialect struct {
	name         string
	numbered     bool   // $1 placeholders instead of ?
	collateC     string // migration template: byte-order collation
	withoutRowID string // migration template: clustered tables
	autoID       string // migration template: an increasing integer primary key
	forUpdate    string // row locks for read-modify-write
	maxParams    int    // bound parameters per statement
	// indexObjects: a new CI's search-index entries are written from one JSON object per
	// CI (json_each), see insertIndexObjects.
	indexObjects bool
	// rollbackOnConflict: plain inserts are INSERT OR ROLLBACK (SQLite). A constraint
	// violation then ends the transaction at once instead of undoing the one statement,
	// which spares SQLite the statement journal — a copy of every page a multi-row INSERT
	// touches, about a twentieth of the writer's CPU — and changes nothing for us: the
	// store never goes on with a transaction after an error, it rolls it back and retries
	// or reports it.
	rollbackOnConflict bool
	// retryable reports a transient error after which the transaction may succeed.
	retryable func(error) bool
}

// sqlStore implements Store on database/sql. On SQLite, w is a single connection whose
// transactions begin IMMEDIATE (one writer, no lock upgrades that deadlock) and r is a
// pool of read-only connections; on PostgreSQL both are the same pool.
type sqlStore struct {
	d          dialect
	w, r       *sql.DB
	maxRetries int
	ins        inserts
	stmts      map[string]*sql.Stmt // prepared insert texts; read-only after open
	texts      map[textKey]string   // insert texts by kind and rows; read-only after open
	planCap    int                  // see List
	// stopCheckpoints ends SQLite's background WAL checkpointer (nil on PostgreSQL).
	stopCheckpoints func() error
	// analyze keeps PostgreSQL's statistics in step with bulk writes (nil on SQLite).
	analyze *analyzer
	// writes counts the transactions begun on w outside a chain, but those that only
	// delete published outbox rows (which the engine never reads): they run on the
	// writer's one connection between two transactions of a chain, where PRAGMA
	// data_version, which only sees other connections' commits, misses them.
	writes atomic.Int64
}

func (s *sqlStore) Close() error {
	s.analyze.close()
	var errs []error
	for _, st := range s.stmts {
		errs = append(errs, st.Close())
	}
	if s.stopCheckpoints != nil {
		errs = append(errs, s.stopCheckpoints())
	}
	if s.r != s.w {
		errs = append(errs, s.r.Close())
	}
	errs = append(errs, s.w.Close())
	return errors.Join(errs...)
}

func (s *sqlStore) Update(ctx context.Context, fn func(context.Context, Tx) error) error {
	return s.retry(ctx, func() error { return s.updateOnce(ctx, fn, true) })
}

// retry runs once until it succeeds, fails for a reason retrying does not cure, or
// maxRetries is reached.
func (s *sqlStore) retry(ctx context.Context, once func() error) error {
	backoff := time.Millisecond
	for attempt := 0; ; attempt++ {
		err := once()
		if err == nil || !s.d.retryable(err) || attempt >= s.maxRetries {
			if err != nil && s.d.retryable(err) {
				return fmt.Errorf("store: gave up after %d attempts: %w", attempt+1, err)
			}
			return err
		}
		// Jitter keeps replicas that collided once from colliding again in lockstep.
		sleep := backoff/2 + rand.N(backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(sleep):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// updateOnce runs fn in one transaction. counted: the transaction may change what the
// engine reads, which a chain of transactions (Chain) must learn (see sqlStore.writes).
func (s *sqlStore) updateOnce(ctx context.Context, fn func(context.Context, Tx) error, counted bool) (err error) {
	t, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	if counted {
		s.writes.Add(1) // whether it commits or not: a chain redoing a batch for nothing is harmless
	}
	defer func() {
		if err != nil {
			_ = t.Rollback() // the error that made us roll back is the one worth reporting
		}
	}()
	x := &tx{s: s, t: t, q: t}
	if err := fn(ctx, x); err != nil {
		return err
	}
	if err := t.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	s.analyze.wrote(x.created)
	return nil
}

// noIndex marks a column so that SQLite does not pick an index for a condition on it
// (the unary + idiom); PostgreSQL's planner needs no such hint.
func (d dialect) noIndex(col string) string {
	if d.numbered {
		return col
	}
	return "+" + col
}

// q rewrites ? placeholders to $n for PostgreSQL. Our SQL never has ? inside literals.
func (d dialect) q(query string) string {
	if !d.numbered {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// placeholders returns "?, ?, …" for n values, padded to a size bucket so that the
// statements of different batches share a few texts (PostgreSQL caches prepared
// statements by text). args is extended with repeats of its last value to match.
func placeholders(args []any) (string, []any) {
	n := len(args)
	bucket := 8
	for bucket < n {
		bucket *= 2
	}
	for len(args) < bucket {
		args = append(args, args[len(args)-1])
	}
	return strings.TrimSuffix(strings.Repeat("?, ", bucket), ", "), args
}

// stringChunks turns strings into IN-list arguments, chunked to stay within parameter limits.
func stringChunks(values []string, size int) [][]any {
	var out [][]any
	for i := 0; i < len(values); i += size {
		part := values[i:min(len(values), i+size)]
		args := make([]any, len(part))
		for j, v := range part {
			args[j] = v
		}
		out = append(out, args)
	}
	return out
}

// insert is one kind of multi-row INSERT the store issues: head names the table and
// columns, suffix is an optional ON CONFLICT clause.
type insert struct {
	head   string
	width  int
	suffix string
}

// textKey names an insert text: the insert's head and suffix, and its rows.
type textKey struct {
	head, suffix string
	rows         int
}

// insertTexts builds every text chunkSizes can ask for once, when the store opens: built
// per statement, they were a percent or two of an ingest's CPU.
func insertTexts(d dialect, ins inserts) map[textKey]string {
	out := map[textKey]string{}
	for _, in := range ins.all() {
		for size := 256; size >= 1; size /= 4 {
			out[textKey{in.head, in.suffix, size}] = in.text(d, size)
		}
	}
	return out
}

// text returns the statement inserting rows rows.
func (in insert) text(d dialect, rows int) string {
	tuple := "(" + strings.TrimSuffix(strings.Repeat("?, ", in.width), ", ") + ")"
	var b strings.Builder
	b.Grow(len(in.head) + rows*(len(tuple)+2) + len(in.suffix) + 20)
	head := in.head
	if d.rollbackOnConflict && in.suffix == "" {
		head = strings.Replace(head, "INSERT INTO ", "INSERT OR ROLLBACK INTO ", 1)
	}
	b.WriteString(head)
	b.WriteString(" VALUES ")
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(tuple)
	}
	b.WriteString(in.suffix)
	return d.q(b.String())
}

// chunkSizes splits n rows into chunks of 256, 64, 16, 4 and 1 rows (within the
// parameter limit): few statements per batch, and few distinct statement texts, so that
// every text can be prepared once and reused.
func chunkSizes(n, width, maxParams int) []int {
	var out []int
	for size := 256; size >= 1; size /= 4 {
		for n >= size && (size*width <= maxParams || size == 1) {
			out = append(out, size)
			n -= size
		}
	}
	return out
}

// insertRows appends the multi-row INSERT statements writing n rows: one round trip and
// no parse per few hundred rows instead of per row, which is most of ingest throughput.
func (s *sqlStore) insertRows(prog []statement, in insert, n int, row func(i int, args []any) []any) []statement {
	i := 0
	for _, size := range chunkSizes(n, in.width, s.d.maxParams) {
		args := make([]any, 0, size*in.width)
		for end := i + size; i < end; i++ {
			args = row(i, args)
		}
		text, ok := s.texts[textKey{in.head, in.suffix, size}]
		if !ok {
			text = in.text(s.d, size)
		}
		prog = append(prog, statement{in.head, text, args})
	}
	return prog
}

// exec runs a statement in t, prepared once when its text was (prepareInserts).
func (s *sqlStore) exec(ctx context.Context, t *sql.Tx, text string, args []any) error {
	if stmt, ok := s.stmts[text]; ok {
		ts := t.StmtContext(ctx, stmt)
		_, err := ts.ExecContext(ctx, args...)
		ts.Close()
		return err
	}
	_, err := t.ExecContext(ctx, text, args...)
	return err
}

// prepareInserts prepares every insert text once, on SQLite, whose driver parses each
// statement anew otherwise (pgx caches prepared statements per connection by itself).
// It runs before any transaction can hold the single writer connection.
func (s *sqlStore) prepareInserts(ctx context.Context) error {
	s.stmts = map[string]*sql.Stmt{}
	for _, in := range s.ins.all() {
		for size := 256; size >= 1; size /= 4 {
			if size*in.width > s.d.maxParams {
				continue
			}
			text := in.text(s.d, size)
			stmt, err := s.w.PrepareContext(ctx, text)
			if err != nil {
				return fmt.Errorf("store: prepare %s: %w", in.head, err)
			}
			s.stmts[text] = stmt
		}
	}
	if s.d.indexObjects {
		for _, text := range indexObjectTexts {
			stmt, err := s.w.PrepareContext(ctx, text)
			if err != nil {
				return fmt.Errorf("store: prepare the index statement: %w", err)
			}
			s.stmts[text] = stmt
		}
	}
	return nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func nullString(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// UpdatePipelined is Update for a caller that computes its writes while earlier ones run
// (store.Pipelined). Each Write's statements are compiled on the caller's goroutine and
// executed by another one on the writer connection, in order, while the caller goes on;
// the caller's reads run on the same connection between two statements (database/sql
// serializes the driver calls), so they see the committed state plus whichever of the
// transaction's queued writes already ran. Reading on a connection of the read pool
// instead cost more than it saved: its page cache starts cold after every commit.
// PostgreSQL's store is not Pipelined: one connection cannot take a statement while
// another's rows are being read, and its reads lock rows (SELECT … FOR UPDATE).
func (s *sqliteStore) UpdatePipelined(ctx context.Context, fn func(context.Context, Tx) error) error {
	return s.retry(ctx, func() error { return s.pipelinedOnce(ctx, fn) })
}

func (s *sqlStore) pipelinedOnce(ctx context.Context, fn func(context.Context, Tx) error) (err error) {
	t, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	s.writes.Add(1)
	defer func() {
		if err != nil {
			_ = t.Rollback()
		}
	}()
	p := &pipeTx{tx: tx{s: s, t: t, q: t}, progs: make(chan []statement, pipeDepth), done: make(chan struct{})}
	go p.write(ctx, t)
	defer func() {
		if r := recover(); r != nil {
			p.failed.Store(true)
			_ = p.close() // the writer ends before the connection is rolled back
			_ = t.Rollback()
			panic(r)
		}
	}()
	err = fn(ctx, p)
	if err != nil {
		p.failed.Store(true) // rolled back: what is still queued need not run
	}
	if werr := p.close(); err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	if err := t.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// pipeDepth bounds the compiled writes waiting for the writer: the caller runs at most
// that far ahead, and holds no more of them in memory.
const pipeDepth = 4

// pipeTx is the Tx of UpdatePipelined: reads through tx, writes queued.
type pipeTx struct {
	tx
	progs  chan []statement
	done   chan struct{}
	failed atomic.Bool // the writer stopped on an error: err is set
	err    error       // read after done is closed, or once failed is set
	errMu  sync.Mutex
}

// Write queues b's statements for the writer. It returns the error of an earlier write
// once the writer has stopped on it; the transaction then fails at the end anyway.
func (p *pipeTx) Write(ctx context.Context, b *Batch) error {
	if err := p.writeErr(); err != nil {
		return err
	}
	prog := p.s.compile(b)
	select {
	case p.progs <- prog:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipeTx) writeErr() error {
	if !p.failed.Load() {
		return nil
	}
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.err
}

// write executes queued statements until progs is closed; after an error it only drains.
func (p *pipeTx) write(ctx context.Context, t *sql.Tx) {
	defer close(p.done)
	for prog := range p.progs {
		if p.failed.Load() {
			continue
		}
		if err := p.s.execute(ctx, t, prog); err != nil {
			p.errMu.Lock()
			p.err = err
			p.errMu.Unlock()
			p.failed.Store(true)
		}
	}
}

// close waits until every queued write ran and returns the first error.
func (p *pipeTx) close() error {
	close(p.progs)
	<-p.done
	return p.err
}
