package probetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
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

// EnvSkipPG turns the PostgreSQL cases off when "1" (they are never skipped silently).
const EnvSkipPG = "OUTPOST_SKIP_PG"

// SkipPG reports whether PostgreSQL was explicitly turned off.
func SkipPG() bool { return os.Getenv(EnvSkipPG) == "1" }

// Postgres is a throwaway PostgreSQL cluster for sql_query's cases, with password
// (SCRAM) authentication so that a wrong password is refused. Adapted from
// services/cmdb/internal/pgtest (which uses trust authentication and cannot be imported
// across services): Debian's binaries under /usr/lib/postgresql/*/bin, installed with
// apt-get when missing and running as root, initdb as the postgres user when root, a
// free port on 127.0.0.1, the socket and data in a temporary directory.
type Postgres struct {
	Host     string // 127.0.0.1
	Port     int
	User     string // superuser "postgres"
	Password string
	dir      string
	bin      string
	cred     *syscall.Credential
}

// StartPostgres initialises and starts a cluster.
func StartPostgres(ctx context.Context) (*Postgres, error) {
	bin, err := findPGBin()
	if err != nil {
		if os.Geteuid() != 0 {
			return nil, fmt.Errorf("%w; install the postgresql package or set %s=1", err, EnvSkipPG)
		}
		if ierr := installPG(ctx); ierr != nil {
			return nil, fmt.Errorf("%w, and installing it failed: %w", err, ierr)
		}
		if bin, err = findPGBin(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "outpost-probetest-pg-")
	if err != nil {
		return nil, err
	}
	pw := make([]byte, 12)
	rand.Read(pw)
	s := &Postgres{Host: "127.0.0.1", User: "postgres", Password: "pw-" + hex.EncodeToString(pw), dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		if s.cred, err = pgUser(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(s.Password+"\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if s.cred != nil {
		os.Chown(pwfile, int(s.cred.Uid), int(s.cred.Gid))
	}
	data := filepath.Join(dir, "data")
	if out, err := s.run(ctx, "initdb", "-D", data, "-U", s.User, "--pwfile="+pwfile, "--auth-host=scram-sha-256", "--auth-local=trust",
		"-E", "UTF8", "--locale=C.UTF-8", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	os.Remove(pwfile)
	if s.Port, err = freePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=100", s.Port, dir)
	if out, err := s.run(ctx, "pg_ctl", "-D", data, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "-o", opts, "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	return s, nil
}

// Psql runs SQL as the superuser over the local socket.
func (s *Postgres) Psql(ctx context.Context, sql string) (string, error) {
	out, err := s.run(ctx, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", s.dir, "-p", strconv.Itoa(s.Port), "-U", s.User, "-d", "postgres", "-c", sql)
	return string(out), err
}

// Stop stops the server and removes its directory.
func (s *Postgres) Stop() error {
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

func (s *Postgres) run(ctx context.Context, tool string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, tool), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	// pg_ctl leaves the server running with our pipes: output to a file, not a pipe
	f, err := os.CreateTemp(s.dir, tool+"-*.out")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if s.cred != nil {
		os.Chown(f.Name(), int(s.cred.Uid), int(s.cred.Gid))
	}
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	return out, err
}

func findPGBin() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return pgVersion(matches[i]) > pgVersion(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL binaries (initdb) under /usr/lib/postgresql/*/bin or on PATH")
}

func pgVersion(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

func installPG(ctx context.Context) error {
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

func pgUser() (*syscall.Credential, error) {
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
