// Package store keeps configuration items, their identifiers, attributes with the source
// of each value, relations, history and identification conflicts in SQL.
//
// Two databases sit behind one Store interface and one set of embedded migrations: SQLite
// (the embedded default: SQLite's C library through mattn/go-sqlite3 in a build with cgo,
// modernc.org/sqlite's pure-Go translation in one without — see sqlite_cgo.go) and
// PostgreSQL (pgx), chosen by DSN. The store
// knows nothing of classes or precedence: the identification and reconciliation engine
// (package ire) decides, and hands the store a Batch of rows to write in one transaction.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
)

// ErrNotFound is returned for a CI id that does not exist.
var ErrNotFound = errors.New("not found")

// ErrBadCursor is returned for a page cursor this store did not issue: the caller's input
// is wrong, not the store.
var ErrBadCursor = errors.New("invalid cursor")

// Store is the CMDB's persistence. Implementations are safe for concurrent use.
type Store interface {
	// Update runs fn in one read-write transaction and commits it when fn returns nil. When
	// the database reports a transient conflict (unique violation from a concurrent writer,
	// serialization failure, deadlock, busy database) the transaction is rolled back and fn
	// runs again from the start, so fn must have no effect outside tx.
	Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error

	// List returns a page of CIs ordered by id.
	List(ctx context.Context, q ListQuery) (Page, error)
	// Get returns one CI with its attribute sources, identifiers, relations in both
	// directions and its latest history.
	Get(ctx context.Context, id string) (Detail, error)
	// History returns a CI's changes, newest first.
	History(ctx context.Context, q HistoryQuery) (HistoryPage, error)
	// Graph returns the CIs within depth relations of id, in either direction.
	Graph(ctx context.Context, id string, depth, maxNodes int) (Graph, error)
	// CountByClass returns the number of CIs of each exact class.
	CountByClass(ctx context.Context) (map[string]int64, error)
	// Conflicts returns recorded identification conflicts, newest first.
	Conflicts(ctx context.Context, q ConflictQuery) (ConflictPage, error)
	// MarkStale flags the CIs not seen since seenBefore and records the change in their
	// history with source; it never deletes. It returns the CIs it flagged. announce, when
	// set, returns the messages that announce them, written in the same transaction (outbox).
	MarkStale(ctx context.Context, seenBefore, now time.Time, source string, announce func([]Ref) ([]OutboxMsg, error)) ([]Ref, error)

	// PendingOutbox returns the messages of up to limit outbox rows, oldest first:
	// announcements committed with their ingest and not yet acknowledged by the stream.
	PendingOutbox(ctx context.Context, limit int) ([]OutboxMsg, error)
	// DeleteOutbox removes outbox rows once the stream acknowledged all their messages.
	DeleteOutbox(ctx context.Context, seqs []int64) error
	// PruneReceipts deletes the stored receipts of payloads ingested before before, and
	// returns how many.
	PruneReceipts(ctx context.Context, before time.Time) (int64, error)

	Close() error
}

// Pipelined is a Store whose transactions can run the caller's work beside their writes.
//
// UpdatePipelined is Update, except that Write only queues the batch: another goroutine
// executes the writes in order while fn goes on, and tx's reads may or may not see what
// tx wrote so far — the caller keeps what it wrote and completes reads with it (the
// engine's overlay does). An error of a queued write is returned by a later Write or by
// UpdatePipelined, and the transaction is rolled back. Why: on SQLite the single writer
// connection is the ingest's bottleneck; with this, it executes statements while the
// engine reconciles the next payloads.
type Pipelined interface {
	UpdatePipelined(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
}

// Tx is what the engine reads and writes inside one transaction.
type Tx interface {
	// LookupIdentifiers returns the identifier rows that exist among keys. A row whose CIID
	// is empty marks a value shared by several devices.
	LookupIdentifiers(ctx context.Context, keys []Key) (map[Key]string, error)
	// IdentifiersOf returns the identifiers held by each CI.
	IdentifiersOf(ctx context.Context, ciIDs []string) (map[string][]Key, error)
	// LoadCIs returns the current state of CIs, locking their rows against concurrent
	// writers where the database supports row locks.
	LoadCIs(ctx context.Context, ids []string) (map[string]*CIState, error)
	// LoadRelations returns the relations starting at any of fromIDs.
	LoadRelations(ctx context.Context, fromIDs []string) ([]RelationRow, error)
	// LoadReceipts returns the stored receipts of the payloads among keys that were
	// ingested already.
	LoadReceipts(ctx context.Context, keys []string) (map[string]string, error)
	// Write applies a batch. Inserts of identifiers and relations fail on a unique violation
	// (a concurrent writer got there first), which makes Update retry.
	Write(ctx context.Context, b *Batch) error
}

// Key is an identifier: a normalised value of a kind (rule name) within a family.
type Key = cmdbapi.Key

// Identifier binds a Key to a CI.
type Identifier struct {
	Key
	CIID string
}

// CIRow is the row of one CI.
type CIRow struct {
	ID                string
	Class             string
	Name              string
	Created           time.Time
	Updated           time.Time
	LastSeen          time.Time
	Stale             bool
	OperationalStatus string
}

// AttrRow is the current value of one attribute of a CI and the source that set it.
type AttrRow struct {
	CIID     string
	Attr     string
	Value    string // JSON
	Source   string
	Observed time.Time
}

// CIState is a CI with its attributes, as reconciliation reads and writes it.
type CIState struct {
	CIRow
	Attrs map[string]AttrRow
}

// AttrChange is an attribute value replaced; Old or New is "" when absent. The store keeps
// its filter and search index from these.
type AttrChange struct {
	CIID     string
	Attr     string
	Old, New string // JSON
}

// HistoryRow is one change of one attribute. Old or New is nil when the attribute did not
// exist before or after.
type HistoryRow struct {
	ID     string
	CIID   string
	Attr   string
	Old    *string // JSON
	New    *string // JSON
	Source string
	Time   time.Time
}

// RelationRow is one relation.
type RelationRow struct {
	ID       string
	Type     string
	From     string
	To       string
	Source   string
	Created  time.Time
	LastSeen time.Time
}

// ConflictRow is an item identification refused: it matched several CIs, or its only
// identifiers are shared by several devices.
type ConflictRow struct {
	ID         string
	DedupKey   string // same key = same conflict, recorded once
	Source     string
	NativeKey  string
	Class      string
	Ref        string
	Item       json.RawMessage
	Candidates []string
	Reason     string
	Time       time.Time
}

// Batch is everything one ingest writes.
type Batch struct {
	NewCIs      []CIState
	ChangedCIs  []CIState // full rows and attributes of existing CIs
	AttrChanges []AttrChange
	// NewIdentifiers must not exist yet; MovedIdentifiers take over a value from another
	// CI; SharedIdentifiers stop identifying anything.
	NewIdentifiers    []Identifier
	MovedIdentifiers  []Identifier
	SharedIdentifiers []Key
	History           []HistoryRow
	NewRelations      []RelationRow
	SeenRelations     []RelationRow // existing relations whose last_seen moves
	Conflicts         []ConflictRow
	// Outbox are messages to publish once the transaction commits (transactional outbox);
	// Receipts are the receipts to keep by payload id.
	Outbox   []OutboxMsg
	Receipts []ReceiptRow
}

// OutboxMsg is a message written with the changes it announces and published by a drainer
// after the commit. The messages of one Write share a Seq (one outbox row): the row is
// deleted once all of them are acknowledged.
type OutboxMsg struct {
	Seq     int64
	Subject string
	MsgID   string // Nats-Msg-Id: a message published twice is stored once by the stream
	Header  map[string][]string
	Data    []byte // the body
}

// ReceiptRow is the receipt of one ingested payload, by payload id.
type ReceiptRow struct {
	Payload string
	Body    string // what the service publishes (JSON)
	Created time.Time
}

// Empty reports whether the batch writes nothing.
func (b *Batch) Empty() bool {
	return len(b.NewCIs)+len(b.ChangedCIs)+len(b.AttrChanges)+len(b.NewIdentifiers)+len(b.MovedIdentifiers)+
		len(b.SharedIdentifiers)+len(b.History)+len(b.NewRelations)+len(b.SeenRelations)+len(b.Conflicts)+
		len(b.Outbox)+len(b.Receipts) == 0
}

// What queries return is the contract's (libs/api/cmdb): the store's answers cross the wire
// as they are.
type (
	Ref          = cmdbapi.Ref
	CI           = cmdbapi.CI
	AttrSource   = cmdbapi.AttrSource
	Relation     = cmdbapi.Relation
	HistoryEntry = cmdbapi.HistoryEntry
	Detail       = cmdbapi.Detail
	Node         = cmdbapi.Node
	Edge         = cmdbapi.Edge
	Graph        = cmdbapi.Graph
	Conflict     = cmdbapi.Conflict
)

// DetailHistory is how many history entries Get returns; History pages through the rest.
const DetailHistory = 100

// AttrFilter matches CIs whose attribute equals Value, compared trimmed and
// case-insensitively on the attribute's text (4, true, Linux).
type AttrFilter struct {
	Attr  string
	Value string
}

// ListQuery selects CIs. Zero values select everything.
type ListQuery struct {
	// Classes are exact class names; callers expand a class to its subclasses
	// (classes.Model.Descendants) so that listing "server" includes linux_server.
	Classes []string
	Filters []AttrFilter
	// Search is a case-insensitive prefix of any SearchAttrs value or of any identifier
	// (serial numbers, MACs of a device's adapters).
	Search      string
	SearchAttrs []string // default: DefaultSearchAttrs()
	Stale       *bool
	Cursor      string // from Page.Next
	Limit       int    // default 50, at most 1000
}

// DefaultSearchAttrs are the attributes searched when a query names none.
func DefaultSearchAttrs() []string {
	return []string{"name", "ip_address", "serial_number", "mac_address", "fqdn", "address"}
}

// Page is one page of CIs; Next is empty on the last page.
type Page struct {
	Items []CI   `json:"items"`
	Next  string `json:"next,omitempty"`
}

// HistoryQuery pages through one CI's history.
type HistoryQuery struct {
	CIID   string
	Cursor string
	Limit  int
}

// HistoryPage is one page of history, newest first.
type HistoryPage struct {
	Items []HistoryEntry `json:"items"`
	Next  string         `json:"next,omitempty"`
}

// ConflictQuery pages through conflicts.
type ConflictQuery struct {
	Cursor string
	Limit  int
}

// ConflictPage is one page of conflicts.
type ConflictPage struct {
	Items []Conflict `json:"items"`
	Next  string     `json:"next,omitempty"`
}

// Options tune a store; the zero value is fine.
type Options struct {
	// MaxRetries bounds how often Update re-runs a transaction that hit a transient
	// conflict (default 20).
	MaxRetries int
	// MaxOpenConns bounds the connection pool for reads (and for writes on PostgreSQL);
	// default 8.
	MaxOpenConns int
}

// Open opens the store named by dsn: sqlite://PATH (a file, created if missing) or
// postgres://… / postgresql://…, and applies pending migrations.
func Open(ctx context.Context, dsn string, opts Options) (Store, error) {
	switch {
	case strings.HasPrefix(dsn, "sqlite://"):
		return OpenSQLite(ctx, strings.TrimPrefix(dsn, "sqlite://"), opts)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return OpenPostgres(ctx, dsn, opts)
	}
	return nil, fmt.Errorf("store: unsupported DSN %q: want sqlite://PATH or postgres://…", redact(dsn))
}

// redact hides a password in a DSN so that errors can be logged.
func redact(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return dsn
	}
	userinfo := dsn[scheme+3 : at]
	if i := strings.Index(userinfo, ":"); i >= 0 {
		return dsn[:scheme+3] + userinfo[:i] + ":xxxxx" + dsn[at:]
	}
	return dsn
}
