// Package ire is the CMDB's identification and reconciliation engine: it turns a payload of
// CIs and relations observed by one source into inserts and updates of the store, so that
// every real thing has one record, never two, never a false merge, and every change is
// explained by a history row naming its source.
//
// Ingest runs in one store transaction:
//
//	validate   against the class model; a bad payload is rejected whole (ValidationError)
//	identify   per item, by the ordered rules of its family; dependents through their parent
//	reconcile  per attribute, by source precedence
//	write      CIs, identifiers, attributes, history, relations, conflicts
//
// and returns what changed, for the caller to publish cmdb.changed.<class> events.
package ire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// Options configure an Engine; the zero value gives the defaults.
type Options struct {
	// Precedence of sources per attribute; default DefaultPrecedence().
	Precedence Precedence
	// Now is the clock for created/updated times and payloads without an observed time.
	Now func() time.Time
	// Logger receives conflicts and retries at debug/info level; default discards.
	Logger *slog.Logger
}

// Engine ingests payloads into a store. It is safe for concurrent use; concurrent ingests
// of the same device, in this process or in other replicas, are made safe by the store
// (unique identifiers, row locks, retried transactions).
type Engine struct {
	store store.Store
	model *classes.Model
	prec  Precedence
	now   func() time.Time
	log   *slog.Logger
	// flushEvery, when set, makes a batch write what it reconciled every so many CIs and
	// relations, on any store (tests); 0: every flushEvery on a pipelined store, else once.
	flushEvery int
}

// New returns an engine writing to st with the class model m.
func New(st store.Store, m *classes.Model, opts Options) (*Engine, error) {
	var errs []error
	if st == nil {
		errs = append(errs, errors.New("ire: store is required"))
	}
	if m == nil {
		errs = append(errs, errors.New("ire: class model is required"))
	}
	if len(opts.Precedence.Sources) == 0 {
		opts.Precedence.Sources = DefaultPrecedence().Sources
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Engine{store: st, model: m, prec: opts.Precedence, now: opts.Now, log: opts.Logger.With("component", "ire")}, nil
}

// Model returns the class model the engine validates against.
func (e *Engine) Model() *classes.Model { return e.model }

// Outcome is what one ingest did, as the contract (libs/api/cmdb) answers it.
type (
	Outcome        = cmdbapi.Outcome
	Change         = cmdbapi.Change
	RelationChange = cmdbapi.RelationChange
	ConflictReport = cmdbapi.ConflictReport
	Skip           = cmdbapi.Skip
)

// Validate checks a payload without touching the store. Ingest validates too.
func (e *Engine) Validate(p envelope.CIPayload) error {
	_, err := e.validate(p)
	return err
}

// Ingest identifies, reconciles and writes a payload in one transaction. A payload that
// fails validation returns a *ValidationError (errors.Is ErrInvalid) and writes nothing;
// other errors are the store's and may be retried by redelivery.
//
// Ingesting the same payload again changes nothing: no history, an empty Outcome.Created
// and Outcome.Updated.
func (e *Engine) Ingest(ctx context.Context, p envelope.CIPayload) (Outcome, error) {
	pl, err := e.validate(p)
	if err != nil {
		return Outcome{}, err
	}
	res := e.ingest(ctx, &Prepared{pl: pl})
	return res.Outcome, res.Err
}

// StaleSource is the source named in history when the CMDB itself marks a CI stale.
const StaleSource = "cmdb"

// MarkStale flags every CI not seen by any source since now-olderThan. Nothing is
// deleted; a stale CI seen again is un-flagged by the ingest that sees it. announce (may be
// nil) returns the messages announcing the flagged CIs, written in the same transaction.
func (e *Engine) MarkStale(ctx context.Context, olderThan time.Duration, now time.Time, announce func([]store.Ref) ([]store.OutboxMsg, error)) ([]store.Ref, error) {
	if olderThan <= 0 {
		return nil, fmt.Errorf("ire: mark stale: olderThan must be positive, got %s", olderThan)
	}
	refs, err := e.store.MarkStale(ctx, now.Add(-olderThan), now, StaleSource, announce)
	if err != nil {
		return nil, fmt.Errorf("ire: mark stale: %w", err)
	}
	return refs, nil
}
