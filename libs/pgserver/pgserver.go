// Package pgserver starts a real, throwaway PostgreSQL server for tests and benchmarks.
//
// It uses Debian's binaries under /usr/lib/postgresql/*/bin (or an initdb on PATH),
// installing the postgresql package with apt-get when they are missing and we run as root
// (as on CI); runs initdb in a temporary directory — as the postgres user when we are root,
// since initdb refuses root — and starts the server on 127.0.0.1 on a free port with its
// socket in that directory and fsync off (the data is thrown away). Stop removes it all.
//
// Test support only: no binary links it.
package pgserver

import (
	"context"
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
	"time"
)

// Options of a server.
type Options struct {
	// Password of the superuser "postgres" over TCP (SCRAM), so that a wrong one is
	// refused; empty: trust authentication.
	Password string
	// MaxConnections (default 100).
	MaxConnections int
	// Host is the loopback address to listen on (default 127.0.0.1); Port the port (default
	// a free one): tests of real software place the server where their map expects it.
	Host string
	Port int
}

// Server is a running throwaway cluster.
type Server struct {
	Host     string // 127.0.0.1
	Port     int
	User     string // the superuser, "postgres"
	Password string
	// DSN is the superuser's URL of the postgres database.
	DSN  string
	dir  string
	bin  string
	cred *syscall.Credential // nil: run as ourselves
}

// Start initialises and starts a new cluster in a temporary directory.
func Start(ctx context.Context, opt Options) (*Server, error) {
	if opt.MaxConnections == 0 {
		opt.MaxConnections = 100
	}
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
	dir, err := os.MkdirTemp("", "outpost-pg-")
	if err != nil {
		return nil, err
	}
	if opt.Host == "" {
		opt.Host = "127.0.0.1"
	}
	if a := net.ParseIP(opt.Host); a == nil || !a.IsLoopback() {
		return nil, fmt.Errorf("pgserver: host %q: want a loopback address", opt.Host)
	}
	s := &Server{Host: opt.Host, User: "postgres", Password: opt.Password, dir: dir, bin: bin}
	fail := func(err error) (*Server, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if os.Geteuid() == 0 {
		if s.cred, err = postgresUser(); err != nil {
			return fail(err)
		}
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fail(err)
		}
	}
	args := []string{"-D", filepath.Join(dir, "data"), "-U", s.User, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"}
	if opt.Password == "" {
		args = append(args, "-A", "trust")
	} else {
		pwfile := filepath.Join(dir, "pw")
		if err := os.WriteFile(pwfile, []byte(opt.Password+"\n"), 0o600); err != nil {
			return fail(err)
		}
		if s.cred != nil {
			_ = os.Chown(pwfile, int(s.cred.Uid), int(s.cred.Gid))
		}
		defer os.Remove(pwfile)
		args = append(args, "--pwfile="+pwfile, "--auth-host=scram-sha-256", "--auth-local=trust")
	}
	if out, err := s.run(ctx, "initdb", args...); err != nil {
		return fail(fmt.Errorf("initdb: %w\n%s", err, out))
	}
	s.Port = opt.Port
	if s.Port == 0 {
		if s.Port, err = freePort(s.Host); err != nil {
			return fail(err)
		}
	}
	// fsync off: the cluster is thrown away, durability would only slow the tests.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=%s -c fsync=off -c full_page_writes=off -c max_connections=%d",
		s.Port, dir, s.Host, opt.MaxConnections)
	if out, err := s.run(ctx, "pg_ctl", "-D", filepath.Join(dir, "data"), "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "-o", opts, "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		return fail(fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log))
	}
	u := url.URL{Scheme: "postgres", User: url.User(s.User), Host: net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), Path: "/postgres", RawQuery: "sslmode=disable"}
	if opt.Password != "" {
		u.User = url.UserPassword(s.User, opt.Password)
	}
	s.DSN = u.String()
	return s, nil
}

// Psql runs SQL as the superuser over the local socket.
func (s *Server) Psql(ctx context.Context, sql string) (string, error) {
	out, err := s.run(ctx, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", s.dir, "-p", strconv.Itoa(s.Port), "-U", s.User, "-d", "postgres", "-c", sql)
	return string(out), err
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
	// that would keep the wait going until the server exits.
	f, err := os.CreateTemp(s.dir, tool+"-*.out")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if s.cred != nil {
		_ = os.Chown(f.Name(), int(s.cred.Uid), int(s.cred.Gid))
	}
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
			if len(out) > 2000 {
				out = out[len(out)-2000:]
			}
			return fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, out)
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

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
