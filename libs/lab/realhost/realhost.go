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
// and never starts a shell: a command line is split on blanks, '...' quotes literally, |
// pipes one listed command into another (`ss -Htnp '! sport = :80' | grep -F -e 'pid=7,'`),
// every other shell character (double quotes, $, `, ;, &, <, >, parentheses and braces
// outside quotes, backslashes) is refused, and unquoted globs are expanded like bash does
// (a pattern matching nothing stays as written).
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
var DefaultCommands = []string{"hostname", "uname", "ss", "ps", "cat", "getent", "grep"}

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

// word is one argument of a command line; a quoted one is never globbed.
type word struct {
	s      string
	quoted bool
}

// parse splits a command line into the stages of a pipeline, each a list of words. It
// refuses what it does not implement rather than guess what a shell would do.
func parse(line string) ([][]word, error) {
	var stages [][]word
	var cur []word
	var b strings.Builder
	inWord, quoted := false, false
	flush := func() {
		if inWord {
			cur = append(cur, word{b.String(), quoted})
			b.Reset()
			inWord, quoted = false, false
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			b.WriteString(line[i+1 : i+1+j])
			inWord, quoted = true, true
			i += j + 1
		case c == ' ' || c == '\t':
			flush()
		case c == '|':
			flush()
			if len(cur) == 0 || i+1 < len(line) && line[i+1] == '|' {
				return nil, errors.New("| needs a command on each side (|| is refused)")
			}
			stages, cur = append(stages, cur), nil
		case strings.IndexByte("\"`$;&<>(){}\\\n", c) >= 0:
			return nil, fmt.Errorf("%q outside single quotes is refused (no shell here)", c)
		default:
			b.WriteByte(c)
			inWord = true
		}
	}
	flush()
	if len(cur) == 0 && len(stages) > 0 {
		return nil, errors.New("| needs a command on each side")
	}
	if len(cur) > 0 {
		stages = append(stages, cur)
	}
	return stages, nil
}

// run executes one command line without a shell and returns its exit status: the last
// stage's, as bash without pipefail.
func (h *Host) run(line string, stdout, stderr io.Writer) int {
	h.mu.Lock()
	h.execs = append(h.execs, line)
	h.mu.Unlock()
	stages, err := parse(line)
	if err != nil {
		fmt.Fprintf(stderr, "realhost: %q refused: %v\n", line, err)
		return 2
	}
	if len(stages) == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.Timeout)
	defer cancel()
	cmds := make([]*exec.Cmd, len(stages))
	for i, st := range stages {
		name := st[0].s
		path, ok := h.paths[name]
		if !ok || st[0].quoted {
			if slices.Contains(h.cfg.Commands, name) {
				fmt.Fprintf(stderr, "bash: %s: command not found\n", name)
			} else {
				fmt.Fprintf(stderr, "realhost: %s: not one of the commands this host runs (%s)\n", name, strings.Join(h.cfg.Commands, ", "))
			}
			return 127
		}
		var args []string
		for _, a := range st[1:] {
			if !a.quoted && strings.ContainsAny(a.s, "*?[") {
				if m, err := filepath.Glob(a.s); err == nil && len(m) > 0 {
					args = append(args, m...)
					continue
				}
			}
			args = append(args, a.s)
		}
		cmd := exec.CommandContext(ctx, path, args...)
		cmd.Stderr = stderr
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
		if i > 0 {
			// the previous stage's stdout is an *os.File: the kernel pipes it, no copying here
			if cmd.Stdin, err = cmds[i-1].StdoutPipe(); err != nil {
				fmt.Fprintf(stderr, "realhost: %v\n", err)
				return 126
			}
		}
		cmds[i] = cmd
	}
	cmds[len(cmds)-1].Stdout = stdout
	for i, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(stderr, "realhost: %s: %v\n", stages[i][0].s, err)
			for _, started := range cmds[:i] {
				_ = started.Process.Kill()
				_ = started.Wait()
			}
			return 126
		}
	}
	status := 0
	for i, cmd := range cmds {
		err := cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
			status = 0
		case errors.As(err, &ee) && ee.ExitCode() >= 0:
			status = ee.ExitCode()
		default:
			fmt.Fprintf(stderr, "realhost: %s: %v\n", stages[i][0].s, err)
			status = 126
		}
	}
	return status
}
