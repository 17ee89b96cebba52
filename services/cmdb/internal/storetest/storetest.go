// Package storetest runs the same test against every Store implementation: SQLite in a
// temporary file and PostgreSQL in a fresh schema (see package pgtest).
package storetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/outpost-dev/outpost/services/cmdb/internal/pgtest"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// Backend names a fresh, empty database of one implementation. Every Open of the same
// Backend reaches the same database, as replicas of the service would.
type Backend struct {
	Name string
	DSN  string
}

// Backends returns a fresh database for each implementation.
func Backends(t testing.TB) []Backend {
	t.Helper()
	out := []Backend{{Name: "sqlite", DSN: "sqlite://" + filepath.Join(t.TempDir(), "cmdb.db")}}
	if !pgtest.Skipped() {
		out = append(out, Backend{Name: "postgres", DSN: pgtest.DSN(t)})
	}
	return out
}

// ForEach runs fn as a subtest per implementation, each with a fresh database.
func ForEach(t *testing.T, fn func(t *testing.T, b Backend)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		fn(t, Backend{Name: "sqlite", DSN: "sqlite://" + filepath.Join(t.TempDir(), "cmdb.db")})
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, Backend{Name: "postgres", DSN: pgtest.DSN(t)}) // skips only with OUTPOST_SKIP_PG=1
	})
}

// Open opens a store on b, closed when the test ends.
func (b Backend) Open(t testing.TB) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), b.DSN, store.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", b.Name, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close %s: %v", b.Name, err)
		}
	})
	return s
}
