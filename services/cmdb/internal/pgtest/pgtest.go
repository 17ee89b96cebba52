// Package pgtest gives tests a real, throwaway PostgreSQL server.
//
// Tests find the server through OUTPOST_PG_DSN. When it is unset, Main starts one for the
// test binary: it looks for Debian's binaries under /usr/lib/postgresql/*/bin, installs
// the postgresql package when they are missing and the tests run as root (as on CI), runs
// initdb in a temporary directory (as the postgres user when we are root, since initdb
// refuses root) and starts the server on 127.0.0.1 on a free port with its socket in that
// directory. The server stops and the directory goes when the tests end.
//
// PostgreSQL is skipped only when OUTPOST_SKIP_PG=1 says so; a server that cannot be
// started fails the tests.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/outpost-dev/outpost/libs/pgserver"
)

// Environment variables the package reads.
const (
	EnvDSN  = "OUTPOST_PG_DSN"  // an existing server's DSN; its user may create schemas
	EnvSkip = "OUTPOST_SKIP_PG" // "1": run without PostgreSQL
)

// Skipped reports whether PostgreSQL tests were explicitly turned off.
func Skipped() bool { return os.Getenv(EnvSkip) == "1" }

// Main runs the tests of a package with a PostgreSQL server available through
// OUTPOST_PG_DSN, starting a throwaway one if needed. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	if Skipped() || os.Getenv(EnvDSN) != "" {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	srv, err := Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: cannot start PostgreSQL: %v\n(set %s to a server's DSN, or %s=1 to skip PostgreSQL tests)\n", err, EnvDSN, EnvSkip)
		return 1
	}
	os.Setenv(EnvDSN, srv.DSN)
	code := m.Run()
	if err := srv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
	}
	return code
}

// MainNoLeaks is Main, and then fails the run if goroutines outlive the tests (stores
// not closed, checkpointers left running).
func MainNoLeaks(m *testing.M) int {
	code := Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: leaked goroutines: %v\n", err)
			return 1
		}
	}
	return code
}

// DSN returns the DSN of a fresh, empty schema for this test on the server named by
// OUTPOST_PG_DSN, dropped when the test ends. Schemas rather than databases: creating one
// takes milliseconds and needs no CREATEDB privilege.
func DSN(t testing.TB) string {
	t.Helper()
	if Skipped() {
		t.Skipf("PostgreSQL skipped: %s=1", EnvSkip)
	}
	base := os.Getenv(EnvDSN)
	if base == "" {
		t.Fatalf("%s is unset: call pgtest.Main from TestMain, or set %s=1 to skip PostgreSQL", EnvDSN, EnvSkip)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("pgtest: drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: %s: %v", EnvDSN, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Server is a throwaway PostgreSQL cluster (trust authentication).
type Server = pgserver.Server

// Start initialises and starts a new cluster in a temporary directory.
func Start(ctx context.Context) (*Server, error) {
	return pgserver.Start(ctx, pgserver.Options{MaxConnections: 300})
}
