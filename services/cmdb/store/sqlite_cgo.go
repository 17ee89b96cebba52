//go:build cgo

package store

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// A build with cgo (the default where a C compiler is present, as on every hub build of
// the Makefile and the hub image) runs the CMDB on SQLite's own C library, through
// mattn/go-sqlite3. The same schema, statements and tests run on the pure-Go translation
// (sqlite_purego.go) in a CGO_ENABLED=0 build. Why C: the CMDB's ingest is bound by the
// SQLite writer — B-tree inserts of every row and index entry of a new CI — and the C
// library does that work in about two thirds of the CPU of the translation; on the 2-core
// bench machine it is 12 % of the hub's CPU per CI and 13 % more CIs/s
// (BenchmarkServiceIngest, docs/benchmarks.md "CMDB ingest, eighth pass").

// SQLiteEngine names the SQLite implementation this build uses, for logs and docs.
func SQLiteEngine() string {
	v, _, _ := sqlite3.Version()
	return "SQLite " + v + " (C library, mattn/go-sqlite3)"
}

var (
	sqliteDriversMu sync.Mutex
	sqliteDrivers   = map[string]string{} // driver name by the pragmas its connections run
)

// openSQLiteDB opens a pool of connections to path whose every connection runs pragmas
// (in order) when it is made, and whose transactions begin with txlock (deferred or
// immediate). mattn/go-sqlite3 takes only some pragmas from the DSN; a connect hook runs
// them all, the same way for every pool, so a pool is a driver of its own.
func openSQLiteDB(path string, pragmas []pragma, txlock string) (*sql.DB, error) {
	stmts := make([]string, len(pragmas))
	for i, p := range pragmas {
		stmts[i] = "PRAGMA " + p.name + " = " + p.value
	}
	key := strings.Join(stmts, ";")
	sqliteDriversMu.Lock()
	name, ok := sqliteDrivers[key]
	if !ok {
		name = fmt.Sprintf("outpost-sqlite3-%d", len(sqliteDrivers))
		sql.Register(name, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
			for _, s := range stmts {
				if _, err := c.Exec(s, nil); err != nil {
					return fmt.Errorf("%s: %w", s, err)
				}
			}
			return nil
		}})
		sqliteDrivers[key] = name
	}
	sqliteDriversMu.Unlock()
	return sql.Open(name, path+"?_txlock="+txlock)
}

func sqliteRetryable(err error) bool {
	var e sqlite3.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.ExtendedCode {
	case sqlite3.ErrConstraintUnique, sqlite3.ErrConstraintPrimaryKey:
		return true
	}
	switch e.Code {
	case sqlite3.ErrBusy, sqlite3.ErrLocked:
		return true
	}
	return false
}
