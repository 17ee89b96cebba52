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
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
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

// Server is a throwaway PostgreSQL cluster.
type Server struct {
	DSN  string // superuser DSN of the postgres database
	dir  string
	bin  string
	cred *syscall.Credential // nil: run as ourselves
}

// Start initialises and starts a new cluster in a temporary directory.
func Start(ctx context.Context) (*Server, error) {
	bin, err := findBin()
	if err != nil {
		if os.Geteuid() != 0 {
			return nil, fmt.Errorf("%w; install the postgresql package", err)
		}
		if ierr := install(ctx); ierr != nil {
			return nil, fmt.Errorf("%w, and installing it failed: %w", err, ierr)
		}
		if bin, err = findBin(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "outpost-pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		if s.cred, err = postgresUser(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := s.run(ctx, "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// fsync off: a test cluster is thrown away, durability would only slow the tests.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=300", port, dir)
	if out, err := s.run(ctx, "pg_ctl", "-D", data, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "-o", opts, "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	s.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	return s, nil
}

// Stop stops the server and removes its directory.
func (s *Server) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := s.run(ctx, "pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop")
	if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("stop PostgreSQL: %w\n%s", err, out)
	}
	return nil
}

func (s *Server) run(ctx context.Context, tool string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, tool), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	// pg_ctl leaves the server running with our pipes: send output to a file, not a pipe
	// that would keep CombinedOutput waiting for the server to exit.
	f, err := os.CreateTemp(s.dir, tool+"-*.out")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	return out, err
}

// findBin returns the newest /usr/lib/postgresql/<version>/bin, or the directory of an
// initdb on PATH.
func findBin() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return version(matches[i]) > version(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL binaries (initdb) under /usr/lib/postgresql/*/bin or on PATH")
}

func version(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// install installs Debian's postgresql package, refreshing the package lists only if the
// first attempt fails (they may be missing on a fresh machine).
func install(ctx context.Context) error {
	apt := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, tail(out))
		}
		return nil
	}
	if err := apt("install", "-y", "-q", "postgresql"); err == nil {
		return nil
	}
	if err := apt("update", "-q"); err != nil {
		return err
	}
	return apt("install", "-y", "-q", "postgresql")
}

func tail(b []byte) string {
	const n = 2000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a postgres user to run initdb (the postgresql package creates it): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
