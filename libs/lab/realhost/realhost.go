// Package realhost is an SSH server whose exec requests run a short list of real commands
// of this machine (ss, ps, cat, hostname, uname, getent by default): the lab's hosts answer
// with simulated output, a real host answers with what the machine really runs. Tests of
// real software (a Debian nginx proxying to an application holding a PostgreSQL connection)
// start one on each loopback address their software listens on, so a real bridge's
// ssh_exec probes reach the real `ss`, `ps` and `cat` through a real SSH hop — there is no
// SSH server of this machine a test may log in to.
//
// Test support only: no binary links it. It runs commands as the test's user, so it binds
// loopback addresses only, takes one password, refuses every command outside its list,
// and never starts a shell: a command line is split on blanks (quotes, operators,
// redirections and substitutions are refused) and globs are expanded like bash does (a
// pattern matching nothing stays as written).
package realhost

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// DefaultCommands are what Service Mapping sends to a Linux host.
var DefaultCommands = []string{"hostname", "uname", "ss", "ps", "cat", "getent"}

// Config of one host.
type Config struct {
	// Addr is a loopback IP:PORT to listen on (127.0.0.0/8).
	Addr string
	// User and Password are the one login the server accepts.
	User, Password string
	// Commands are the command names it runs (default DefaultCommands).
	Commands []string
	// Timeout bounds one command (default 20s).
	Timeout time.Duration
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	ap, err := netip.ParseAddrPort(c.Addr)
	if err != nil {
		errs = append(errs, fmt.Errorf("addr %q: want IP:PORT", c.Addr))
	} else if !ap.Addr().IsLoopback() {
		errs = append(errs, fmt.Errorf("addr %s: a real host runs real commands: loopback addresses only", c.Addr))
	}
	if c.User == "" || c.Password == "" {
		errs = append(errs, errors.New("user and password: both required"))
	}
	for _, n := range c.Commands {
		if n == "" || strings.ContainsAny(n, "/ \t") {
			errs = append(errs, fmt.Errorf("command %q: want a bare command name", n))
		}
	}
	return errors.Join(errs...)
}

// Host is a running server.
type Host struct {
	cfg   Config
	ln    net.Listener
	ssh   *ssh.ServerConfig
	paths map[string]string // command name → its path on this machine
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup

	mu    sync.Mutex
	execs []string
}

// Start listens on cfg.Addr and serves until Close.
func Start(cfg Config) (*Host, error) {
	if len(cfg.Commands) == 0 {
		cfg.Commands = DefaultCommands
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 20 * time.Second
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("realhost: %w", err)
	}
	paths := map[string]string{}
	for _, n := range cfg.Commands {
		if p, err := exec.LookPath(n); err == nil {
			paths[n] = p
		}
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return nil, err
	}
	sc := &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
		PasswordCallback: func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			if c.User() == cfg.User && subtle.ConstantTimeCompare(pw, []byte(cfg.Password)) == 1 {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("permission denied")
		},
	}
	sc.AddHostKey(signer)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("realhost: listen %s: %w", cfg.Addr, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	h := &Host{cfg: cfg, ln: ln, ssh: sc, paths: paths, ctx: ctx, stop: stop}
	h.wg.Add(1)
	go h.accept()
	return h, nil
}

// Addr is the address the server listens on.
func (h *Host) Addr() string { return h.ln.Addr().String() }

// Execs are the command lines executed so far, in order.
func (h *Host) Execs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.execs)
}

// Close stops the server and waits for its sessions.
func (h *Host) Close() error {
	h.stop()
	err := h.ln.Close()
	h.wg.Wait()
	return err
}

func (h *Host) accept() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer c.Close()
			h.serve(c)
		}()
	}
}

func (h *Host) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	sc, chans, reqs, err := ssh.NewServerConn(c, h.ssh)
	if err != nil {
		return
	}
	defer sc.Close()
	_ = c.SetDeadline(time.Time{})
	go ssh.DiscardRequests(reqs)
	stop := context.AfterFunc(h.ctx, func() { sc.Close() })
	defer stop()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "unknown channel type")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.session(ch, creqs)
		}()
	}
}

func (h *Host) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			if req.WantReply {
				_ = req.Reply(req.Type == "env", nil)
			}
			continue
		}
		var p struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			_ = req.Reply(false, nil)
			continue
		}
		_ = req.Reply(true, nil)
		status := h.run(p.Command, ch, ch.Stderr())
		_ = ch.CloseWrite()
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
		return
	}
}

// run executes one command line without a shell and returns its exit status.
func (h *Host) run(line string, stdout, stderr io.Writer) int {
	h.mu.Lock()
	h.execs = append(h.execs, line)
	h.mu.Unlock()
	if strings.ContainsAny(line, "'\"`$;&|<>(){}\\\n") {
		fmt.Fprintf(stderr, "realhost: %q: quotes, operators, redirections and substitutions are refused (no shell here)\n", line)
		return 2
	}
	argv := strings.Fields(line)
	if len(argv) == 0 {
		return 0
	}
	path, ok := h.paths[argv[0]]
	if !ok {
		if slices.Contains(h.cfg.Commands, argv[0]) {
			fmt.Fprintf(stderr, "bash: %s: command not found\n", argv[0])
		} else {
			fmt.Fprintf(stderr, "realhost: %s: not one of the commands this host runs (%s)\n", argv[0], strings.Join(h.cfg.Commands, ", "))
		}
		return 127
	}
	var args []string
	for _, a := range argv[1:] {
		if strings.ContainsAny(a, "*?[") {
			if m, err := filepath.Glob(a); err == nil && len(m) > 0 {
				args = append(args, m...)
				continue
			}
		}
		args = append(args, a)
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode()
	default:
		fmt.Fprintf(stderr, "realhost: %s: %v\n", argv[0], err)
		return 126
	}
}
