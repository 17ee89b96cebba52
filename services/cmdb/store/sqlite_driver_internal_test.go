package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"testing"
)

// Each pool's connections run their settings whichever SQLite the build has: the C library's
// driver takes them from a connect hook, the pure-Go one from its DSN (make test runs this
// on both).
func TestSQLitePoolSettings(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cmdb.db")
	st, err := OpenSQLite(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := st.(*sqliteStore).sqlStore
	t.Logf("engine: %s", SQLiteEngine())
	common := map[string]string{
		"busy_timeout": "10000", "journal_mode": "wal", "synchronous": "1", "foreign_keys": "0",
		"cache_size": "-65536", "temp_store": "2",
	}
	check := func(pool string, db *sql.DB, extra map[string]string) {
		t.Helper()
		want := maps.Clone(common)
		maps.Copy(want, extra)
		for name, v := range want {
			var got string
			if err := db.QueryRowContext(ctx, "PRAGMA "+name).Scan(&got); err != nil {
				t.Errorf("%s: PRAGMA %s: %v", pool, name, err)
			} else if got != v {
				t.Errorf("%s: PRAGMA %s = %s, want %s", pool, name, got, v)
			}
		}
	}
	check("writer", s.w, map[string]string{"wal_autocheckpoint": "0", "query_only": "0"})
	check("readers", s.r, map[string]string{"query_only": "1"})

	// The writer's transactions take the write lock at BEGIN (IMMEDIATE), so a second
	// writer waits at its own BEGIN instead of failing at its first write.
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	other, err := openSQLiteDB(path, []pragma{{"busy_timeout", "0"}}, "immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, err = other.BeginTx(ctx, nil)
	if err == nil {
		t.Fatal("a second IMMEDIATE transaction began while the writer held one")
	}
	if !sqliteRetryable(err) {
		t.Errorf("the busy error %v is not retryable", err)
	}
}

// sqliteRetryable tells lock and uniqueness conflicts, after which a transaction may succeed
// (another writer, another ingest of the same new device), from every other error.
func TestSQLiteRetryable(t *testing.T) {
	ctx := context.Background()
	db, err := openSQLiteDB(filepath.Join(t.TempDir(), "x.db"), []pragma{{"journal_mode", "WAL"}}, "deferred")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`CREATE TABLE k (id TEXT PRIMARY KEY, u TEXT UNIQUE, n TEXT NOT NULL) WITHOUT ROWID`,
		`INSERT INTO k VALUES ('a', 'x', 'n')`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		q    string
		want bool
	}{
		{`INSERT INTO k VALUES ('a', 'y', 'n')`, true},             // primary key
		{`INSERT INTO k VALUES ('b', 'x', 'n')`, true},             // unique
		{`INSERT INTO k VALUES ('c', 'z', NULL)`, false},           // not null
		{`INSERT INTO nowhere VALUES (1)`, false},                  // no such table
		{`INSERT OR ROLLBACK INTO k VALUES ('a', 'q', 'n')`, true}, // as the chain writes
	} {
		_, err := db.ExecContext(ctx, tc.q)
		if err == nil {
			t.Fatalf("%s: no error", tc.q)
		}
		if got := sqliteRetryable(err); got != tc.want {
			t.Errorf("%s: %v: retryable %v, want %v", tc.q, err, got, tc.want)
		}
		if got := sqliteRetryable(fmt.Errorf("store: write: %w", err)); got != tc.want {
			t.Errorf("%s, wrapped: retryable %v, want %v", tc.q, got, tc.want)
		}
	}
	if sqliteRetryable(errors.New("database is locked")) {
		t.Error("a plain error with a lock's text is retryable")
	}
}
