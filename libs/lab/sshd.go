package lab

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// The SSH server of linux hosts (and of network gear, where no login
// succeeds): x/crypto/ssh with the host's deterministic ed25519 key, password
// and public-key authentication, exec requests run by the lab's tiny shell,
// and an interactive shell with or without a pty.

func (l *Lab) sshConfig(h *host) *ssh.ServerConfig {
	h.sshOnce.Do(func() { h.sshCfg = l.newSSHConfig(h) })
	return h.sshCfg
}

func (l *Lab) newSSHConfig(h *host) *ssh.ServerConfig {
	errDenied := errors.New("permission denied")
	cfg := &ssh.ServerConfig{
		ServerVersion: h.sshVersion,
		MaxAuthTries:  6,
		PasswordCallback: func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			if h.sshUser != "" && c.User() == h.sshUser && subtle.ConstantTimeCompare(pw, []byte(h.sshPass)) == 1 {
				return &ssh.Permissions{}, nil
			}
			return nil, errDenied
		},
		PublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if h.sshUser == "" || c.User() != h.sshUser {
				return nil, errDenied
			}
			for _, k := range l.cfg.AuthorizedKeys {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, errDenied
		},
	}
	cfg.AddHostKey(h.hostKey)
	return cfg
}

func (l *Lab) serveSSH(c net.Conn, h *host) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	sc, chans, reqs, err := ssh.NewServerConn(c, l.sshConfig(h))
	if err != nil {
		return
	}
	defer sc.Close()
	c.SetDeadline(time.Time{})
	ctx, cancel := context.WithCancel(l.ctx)
	defer cancel()
	l.goServe(func() { ssh.DiscardRequests(reqs) })
	user := sc.User()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "unknown channel type")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		l.goServe(func() { l.session(ctx, h, user, ch, creqs) })
	}
}

type exitStatus struct{ Status uint32 }

func (l *Lab) session(ctx context.Context, h *host, user string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pty := false
	started := false
	finish := func(status int) {
		ch.CloseWrite()
		ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{uint32(status)}))
		ch.Close()
	}
	for req := range reqs {
		switch req.Type {
		case "pty-req":
			pty = true
			req.Reply(true, nil)
		case "env", "window-change", "auth-agent-req@openssh.com":
			if req.WantReply {
				req.Reply(req.Type != "auth-agent-req@openssh.com", nil)
			}
		case "exec":
			var p struct{ Command string }
			if started || ssh.Unmarshal(req.Payload, &p) != nil {
				req.Reply(false, nil)
				continue
			}
			started = true
			req.Reply(true, nil)
			l.goServe(func() {
				ended := l.execStarted(h, p.Command)
				var out, errw io.Writer = ch, ch.Stderr()
				if pty {
					out = crlfWriter{ch}
					errw = out
				}
				env := &shellEnv{ctx: ctx, h: h, user: user, stdout: out, stderr: errw}
				status := l.runLive(ctx, h, env, p.Command)
				ended() // before the client hears the end: it may start the next at once
				finish(status)
			})
		case "shell":
			if started {
				req.Reply(false, nil)
				continue
			}
			started = true
			req.Reply(true, nil)
			l.goServe(func() { finish(l.interactive(ctx, h, user, ch, pty)) })
		default:
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
}

// crlfWriter does what a tty's onlcr does.
type crlfWriter struct{ w io.Writer }

func (c crlfWriter) Write(p []byte) (int, error) {
	if _, err := c.w.Write(bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n"))); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (h *host) prompt(user string) string {
	sign := "$"
	if user == "root" {
		sign = "#"
	}
	if h.lx.d.family == "rpm" {
		return fmt.Sprintf("[%s@%s ~]%s ", user, h.name, sign)
	}
	return fmt.Sprintf("%s@%s:~%s ", user, h.name, sign)
}

// interactive is a login shell: a prompt and line editing with a pty, plain
// lines without one (like bash reading a script from stdin).
func (l *Lab) interactive(ctx context.Context, h *host, user string, ch ssh.Channel, pty bool) int {
	var out io.Writer = ch
	if pty {
		out = crlfWriter{ch}
		fmt.Fprintf(out, "Linux %s %s %s x86_64\n\nLast login: Mon Sep  9 08:12:31 2024 from 10.0.0.15\n", h.name, h.lx.kernel.release, h.lx.kernel.version)
		io.WriteString(out, h.prompt(user))
	}
	buf := make([]byte, 4096)
	var line []byte
	status := 0
	for {
		n, err := ch.Read(buf)
		if err != nil {
			return status
		}
		for _, c := range buf[:n] {
			switch {
			case pty && c == 0x7f, pty && c == 0x08:
				if len(line) > 0 {
					line = line[:len(line)-1]
					io.WriteString(ch, "\b \b")
				}
				continue
			case pty && c == 0x03:
				line = line[:0]
				io.WriteString(out, "^C\n"+h.prompt(user))
				continue
			case pty && c == 0x04 && len(line) == 0:
				io.WriteString(out, "logout\n")
				return status
			case c == '\r' || c == '\n':
				if pty {
					io.WriteString(out, "\n")
				} else if c == '\r' {
					continue
				}
				cmd := strings.TrimSpace(string(line))
				line = line[:0]
				if cmd == "exit" || cmd == "logout" || strings.HasPrefix(cmd, "exit ") {
					if pty {
						io.WriteString(out, "logout\n")
					}
					env := &shellEnv{ctx: ctx, h: h, user: user, stdout: io.Discard, stderr: io.Discard}
					return env.run(cmd)
				}
				if cmd != "" {
					var errw io.Writer = ch.Stderr()
					if pty {
						errw = out
					}
					env := &shellEnv{ctx: ctx, h: h, user: user, stdout: out, stderr: errw}
					status = l.runLive(ctx, h, env, cmd)
				}
				if pty {
					io.WriteString(out, h.prompt(user))
				}
				continue
			}
			line = append(line, c)
			if pty {
				ch.Write([]byte{c})
			}
		}
		if ctx.Err() != nil {
			return status
		}
	}
}
