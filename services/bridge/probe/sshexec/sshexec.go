// Package sshexec is the ssh_exec probe kind: log in over SSH with the first credential
// that works and run a list of commands, each with its own timeout. It reports which
// credential worked and which were refused (credential affinity), the host key's SHA-256
// fingerprint, and per command stdout, stderr (each capped, with a truncated flag and the
// original size) and the exit code.
//
// Credentials (type ssh): Username with Secret as password, or fields.private_key (PEM,
// Secret then being its passphrase if any).
//
// Host keys: a pinned fingerprint (params.host_key, an operator's) and the key the hub
// recorded on first use (params.known_host_key) are checked before any credential is sent;
// a mismatch fails with host_key_mismatch. Without either, the key is trusted on first
// use: the result reports it and the hub records it for next time.
package sshexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/sshexec"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/capture"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/execlimit"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// The contract of the kind (libs/probes/sshexec): what a probe asks and what it answers.
type (
	Command = contract.Command
	Params  = contract.Params
	Output  = contract.Output
	Result  = contract.Result
)

// Config of ssh_exec: the limits every exec kind has (Validate comes with them).
type Config struct {
	execlimit.Limits `yaml:",inline"`
}

type factory struct{}

// NewFactory returns the ssh_exec kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec { return contract.Spec }
func (factory) DefaultConfig() any {
	return Config{Limits: execlimit.Default(100)}
}

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "ssh_exec: config of type %T", cfg)
	}
	return &runner{cfg: c, set: set}, nil
}

type runner struct {
	cfg Config
	set probe.Settings
}

type command struct {
	cmd     string
	timeout time.Duration
}

func (r *runner) Run(ctx context.Context, req probe.Request, _ probe.Emit) (any, error) {
	if err := probe.CheckCredentials("ssh_exec", req.Credentials); err != nil {
		return nil, err
	}
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	timeouts, err := execlimit.Timeouts(r.cfg.Limits, p.Commands, p.Timeout, func(c Command) (string, string) { return c.Cmd, c.Timeout })
	if err != nil {
		return nil, err
	}
	cmds := make([]command, len(p.Commands))
	for i, c := range p.Commands {
		cmds[i] = command{c.Cmd, timeouts[i]}
	}
	connectTO, err := r.cfg.Connect(p.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	maxOut, err := r.cfg.PerStream(p.MaxOutput, r.set.MaxOutput, len(cmds))
	if err != nil {
		return nil, err
	}
	if p.HostKey != "" && !strings.HasPrefix(p.HostKey, "SHA256:") {
		return nil, param.Bad("host_key", "%s: want a SHA256:... fingerprint as ssh-keygen -l prints it", param.Quote(p.HostKey))
	}
	if p.KnownHostKey != "" && !strings.HasPrefix(p.KnownHostKey, "SHA256:") {
		return nil, param.Bad("known_host_key", "%s: want a SHA256:... fingerprint", param.Quote(p.KnownHostKey))
	}
	expect := hostKeyCheck{pinned: p.HostKey, known: p.KnownHostKey}
	creds := req.Credentials
	if len(creds) == 0 {
		return nil, probe.Errorf(probe.CodeBadParams, "credentials: ssh_exec needs at least one ssh credential")
	}
	port, err := param.Port("port", p.Port, 22)
	if err != nil {
		return nil, err
	}
	ep, err := target.Resolve(ctx, r.set, req.Target, port)
	if err != nil {
		return nil, err
	}
	secrets := param.Secrets(creds)
	start := r.set.Time()
	res := Result{IP: ep.IP.String(), Port: ep.Port, FailedCredentials: []string{}, Outputs: []Output{}}
	var client *ssh.Client
	for _, c := range creds {
		cl, hk, err := r.login(ctx, ep, c, connectTO, expect)
		if hk.fp != "" {
			res.HostKey, res.HostKeyType = hk.fp, hk.typ
		}
		if err == nil {
			client, res.Credential, res.Username = cl, c.Name, c.Username
			res.ServerVersion = string(cl.ServerVersion())
			break
		}
		if probe.CodeOf(err) == contract.CodeHostKeyMismatch {
			// the result carries the key seen, so the hub can show both
			res.DurationMS = r.set.Since(start).Milliseconds()
			return res, param.RedactError(err, secrets)
		}
		var auth *authError
		if errors.As(err, &auth) {
			r.log().Debug("ssh credential refused", "target", ep.Addr(), "credential", c)
			res.FailedCredentials = append(res.FailedCredentials, c.Name)
			continue
		}
		return nil, param.RedactError(err, secrets)
	}
	if client == nil {
		// the result names the refused credentials (readers record them: credential
		// affinity) and the host key seen; the code says what happened
		res.DurationMS = time.Since(start).Milliseconds()
		return res, probe.Errorf(probe.CodeAuth, "%s refused every credential (%s)", ep.Addr(), strings.Join(res.FailedCredentials, ", "))
	}
	defer client.Close()
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()
	for _, c := range cmds {
		out := r.exec(ctx, client, c, maxOut)
		out.Stdout = param.RedactBlob(out.Stdout, secrets)
		out.Stderr = param.RedactBlob(out.Stderr, secrets)
		res.Outputs = append(res.Outputs, out)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if execlimit.Stop(p.StopOnError, out.Error, out.TimedOut, out.ExitCode) {
			break // the connection is gone, or stop_on_error after a failure
		}
	}
	res.DurationMS = r.set.Since(start).Milliseconds()
	return res, nil
}

func (r *runner) log() interface {
	Debug(msg string, args ...any)
} {
	if r.set.Logger != nil {
		return r.set.Logger
	}
	return nopLog{}
}

type nopLog struct{}

func (nopLog) Debug(string, ...any) {}

type authError struct{ err error }

func (e *authError) Error() string { return "authentication failed" }

type hostKey struct{ fp, typ string }

// login connects and authenticates with one credential, on a connection of its own
// (servers count failed attempts per connection).
// hostKeyCheck is what the host key must be: an operator's pin, the hub's record from the
// first use, or (both empty) anything — trust on first use, reported in the result.
type hostKeyCheck struct{ pinned, known string }

func (h hostKeyCheck) check(got string) error {
	switch {
	case h.pinned != "" && got != h.pinned:
		return &pinError{got: got, want: h.pinned}
	case h.known != "" && got != h.known:
		return &pinError{got: got, want: h.known, known: true}
	}
	return nil
}

func (r *runner) login(ctx context.Context, ep target.Endpoint, c probe.Credential, timeout time.Duration, expect hostKeyCheck) (*ssh.Client, hostKey, error) {
	var hk hostKey
	auth, err := authMethods(c)
	if err != nil {
		return nil, hk, err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := target.Dialer(r.set)(cctx, "tcp", ep.Addr())
	if err != nil {
		return nil, hk, target.DialError(cctx, ep.Addr(), err)
	}
	stop := context.AfterFunc(cctx, func() { conn.SetDeadline(clock.Past) })
	cfg := &ssh.ClientConfig{
		User: c.Username,
		Auth: auth,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			hk = hostKey{ssh.FingerprintSHA256(key), key.Type()}
			return expect.check(hk.fp)
		},
		ClientVersion: "SSH-2.0-OutpostBridge_1",
		Timeout:       timeout,
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, ep.Addr(), cfg)
	handshakeDone := stop()
	if err != nil {
		conn.Close()
		var pe *pinError
		switch {
		case errors.As(err, &pe) && pe.known:
			return nil, hk, probe.Errorf(contract.CodeHostKeyMismatch, "host key for %s changed from %s to %s: no credential was sent; if the host was rebuilt, run `outpost hostkeys forget %s`",
				ep.IP, pe.want, pe.got, ep.IP)
		case errors.As(err, &pe):
			return nil, hk, probe.Errorf(contract.CodeHostKeyMismatch, "%s: host key %s differs from the pinned %s: no credential was sent", ep.Addr(), pe.got, pe.want)
		case ctx.Err() != nil:
			return nil, hk, ctx.Err()
		case !handshakeDone || target.IsTimeout(err):
			return nil, hk, probe.Errorf(probe.CodeTimeout, "%s: no SSH handshake within %s", ep.Addr(), timeout)
		case strings.Contains(err.Error(), "unable to authenticate"), strings.Contains(err.Error(), "no supported methods remain"):
			return nil, hk, &authError{err}
		}
		return nil, hk, probe.Errorf(probe.CodeProtocol, "%s: SSH handshake failed: %v", ep.Addr(), err)
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), hk, nil
}

type pinError struct {
	got, want string
	known     bool // want is the hub's first-use record, not an operator's pin
}

func (e *pinError) Error() string { return "host key mismatch" }

func authMethods(c probe.Credential) ([]ssh.AuthMethod, error) {
	if pk := c.Fields["private_key"]; pk != "" {
		var signer ssh.Signer
		var err error
		if c.Secret != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(pk), []byte(c.Secret))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(pk))
		}
		if err != nil {
			// never echo the key parser's error: it may quote key material
			return nil, probe.Errorf(probe.CodeBadParams, "credential %s: fields.private_key is not a usable private key", c.Name)
		}
		return []ssh.AuthMethod{ssh.PublicKeys(signer)}, nil
	}
	pw := c.Secret
	return []ssh.AuthMethod{
		ssh.Password(pw),
		ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
			answers := make([]string, len(questions))
			for i := range answers {
				answers[i] = pw
			}
			return answers, nil
		}),
	}, nil
}

func (r *runner) exec(ctx context.Context, client *ssh.Client, c command, maxOut int) Output {
	out := Output{Command: c.cmd}
	start := r.set.Time()
	defer func() { out.DurationMS = r.set.Since(start).Milliseconds() }()
	sess, err := client.NewSession()
	if err != nil {
		out.Error = "cannot open a session: " + err.Error()
		return out
	}
	defer sess.Close()
	stdout, stderr := capture.NewBuffer(maxOut), capture.NewBuffer(maxOut)
	sess.Stdout, sess.Stderr = &locked{w: stdout}, &locked{w: stderr}
	done := make(chan error, 1)
	if err := sess.Start(c.cmd); err != nil {
		out.Error = "cannot start the command: " + err.Error()
		return out
	}
	go func() { done <- sess.Wait() }()
	timer := time.NewTimer(c.timeout)
	defer timer.Stop()
	select {
	case err = <-done:
	case <-timer.C:
		out.TimedOut = true
		sess.Signal(ssh.SIGKILL)
		sess.Close()
		<-done
	case <-ctx.Done():
		sess.Close()
		<-done
		out.Error = ctx.Err().Error()
	}
	out.Stdout = stdout.Blob(out.TimedOut)
	out.Stderr = stderr.Blob(out.TimedOut)
	if out.TimedOut {
		out.Error = fmt.Sprintf("no exit within %s: killed", c.timeout)
		return out
	}
	var ee *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		zero := 0
		out.ExitCode = &zero
	case errors.As(err, &ee):
		code := ee.ExitStatus()
		out.ExitCode = &code
		out.Signal = ee.Signal()
	case errors.As(err, &missing):
		out.Error = "the server sent no exit status"
	case out.Error == "":
		if !errors.Is(err, io.EOF) {
			out.Error = err.Error()
		}
	}
	return out
}

// locked serialises writes: the SSH library copies stdout and stderr concurrently.
type locked struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *locked) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
