package store_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/outpost-dev/outpost/services/cmdb/classes"
	"github.com/outpost-dev/outpost/services/cmdb/internal/pgtest"
	"github.com/outpost-dev/outpost/services/cmdb/internal/storetest"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// A PostgreSQL store analyzes its tables once it created as many CIs as there were (at
// least analyzeMin), so that the planner does not plan lists on an empty table's statistics after
// an import; not before, and not per batch.
func TestPostgresAnalyzesAfterBulkWrites(t *testing.T) {
	if pgtest.Skipped() {
		t.Skip("PostgreSQL skipped (OUTPOST_SKIP_PG=1)")
	}
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	store.SetAnalyzeMin(t, 100)
	st := storetest.Backend{Name: "postgres", DSN: dsn}.Open(t)
	m, err := classes.Default()
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tuples := func() float64 {
		t.Helper()
		var n float64
		if err := db.QueryRowContext(ctx, `SELECT reltuples FROM pg_class WHERE relname = 'ci_index' AND relkind = 'r' AND pg_table_is_visible(oid)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := tuples(); n > 0 {
		t.Fatalf("ci_index has statistics (%v rows) before anything was written", n)
	}
	estate(t, st, m) // 111 CIs in one transaction: past the 100
	deadline := time.Now().Add(30 * time.Second)
	for {
		done, failed := store.AnalyzeRuns(st)
		if failed > 0 {
			t.Fatalf("ANALYZE failed %d times", failed)
		}
		if done > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no ANALYZE within 30 s of creating 111 CIs")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Every CI has index entries: the statistics now count them.
	if n := tuples(); n < 111 {
		t.Errorf("ci_index statistics count %v rows after ANALYZE, want at least 111", n)
	}
	done, _ := store.AnalyzeRuns(st)
	if done != 1 {
		t.Errorf("%d ANALYZE runs for one transaction, want 1", done)
	}
}
