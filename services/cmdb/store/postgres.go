package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// OpenPostgres connects to PostgreSQL and migrates the schema (under an advisory lock, so
// that replicas starting together migrate once).
//
// Transactions run at READ COMMITTED: identity is guarded by unique constraints on
// identifiers (a concurrent insert of the same device fails and is retried, then finds the
// CI), and CIs being reconciled are locked with SELECT … FOR UPDATE.
func OpenPostgres(ctx context.Context, dsn string, opts Options) (Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: postgres DSN %s: %w", redact(dsn), err)
	}
	db := stdlib.OpenDB(*cfg)
	n := opts.MaxOpenConns
	if n <= 0 {
		n = 8
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxIdleTime(5 * time.Minute)

	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: postgres %s: %w", redact(dsn), err)
	}
	s := &sqlStore{
		d: dialect{
			name:      "postgres",
			numbered:  true,
			collateC:  ` COLLATE "C"`,
			autoID:    "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
			forUpdate: " FOR UPDATE",
			maxParams: 65000,
			retryable: postgresRetryable,
		},
		w:          db,
		r:          db,
		maxRetries: retries(opts),
		ins:        newInserts(),
		planCap:    defaultPlanCap,
	}
	s.texts = insertTexts(s.d, s.ins)
	if err := s.migrate(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	s.analyze = newAnalyzer(ctx, db)
	return s, nil
}

func postgresRetryable(err error) bool {
	var e *pgconn.PgError
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case "23505", // unique_violation: a concurrent ingest created the same identifier first
		"40001", // serialization_failure
		"40P01": // deadlock_detected
		return true
	}
	return false
}
