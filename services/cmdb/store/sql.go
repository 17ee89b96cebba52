package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
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
	planCap    int                  // see List
	// stopCheckpoints ends SQLite's background WAL checkpointer (nil on PostgreSQL).
	stopCheckpoints func() error
}

func (s *sqlStore) Close() error {
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
	backoff := time.Millisecond
	for attempt := 0; ; attempt++ {
		err := s.updateOnce(ctx, fn)
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

func (s *sqlStore) updateOnce(ctx context.Context, fn func(context.Context, Tx) error) (err error) {
	t, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = t.Rollback() // the error that made us roll back is the one worth reporting
		}
	}()
	if err := fn(ctx, &tx{s: s, t: t}); err != nil {
		return err
	}
	if err := t.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
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

// text returns the statement inserting rows rows.
func (in insert) text(d dialect, rows int) string {
	tuple := "(" + strings.TrimSuffix(strings.Repeat("?, ", in.width), ", ") + ")"
	var b strings.Builder
	b.Grow(len(in.head) + rows*(len(tuple)+2) + len(in.suffix) + 8)
	b.WriteString(in.head)
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

// insertRows writes n rows with multi-row INSERT statements: one round trip and no parse
// per few hundred rows instead of per row, which is most of ingest throughput.
func (s *sqlStore) insertRows(ctx context.Context, t *sql.Tx, in insert, n int, row func(i int, args []any) []any) error {
	if n == 0 {
		return nil
	}
	i := 0
	args := make([]any, 0, min(n, 256)*in.width)
	for _, size := range chunkSizes(n, in.width, s.d.maxParams) {
		args = args[:0]
		for end := i + size; i < end; i++ {
			args = row(i, args)
		}
		if err := s.exec(ctx, t, in.text(s.d, size), args); err != nil {
			return fmt.Errorf("%s: %w", in.head, err)
		}
	}
	return nil
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
