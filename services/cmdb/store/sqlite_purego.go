//go:build !cgo

package store

import (
	"database/sql"
	"errors"
	"net/url"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// A build without cgo (CGO_ENABLED=0: a static binary, cross-compiled) runs the CMDB on
// modernc.org/sqlite, SQLite translated to Go. Same schema, statements and tests as the C
// library of sqlite_cgo.go; its writes cost about half as much CPU again.

// SQLiteEngine names the SQLite implementation this build uses, for logs and docs.
func SQLiteEngine() string {
	return "SQLite " + sqlite3.SQLITE_VERSION + " (pure Go, modernc.org/sqlite)"
}

// openSQLiteDB opens a pool of connections to path whose every connection runs pragmas
// (in order) when it is made, and whose transactions begin with txlock.
func openSQLiteDB(path string, pragmas []pragma, txlock string) (*sql.DB, error) {
	params := url.Values{}
	for _, p := range pragmas {
		params.Add("_pragma", p.name+"("+p.value+")")
	}
	params.Set("_txlock", txlock)
	return sql.Open("sqlite", path+"?"+params.Encode())
}

func sqliteRetryable(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	switch e.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return true
	}
	return false
}
