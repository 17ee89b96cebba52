// Package winrmexec is the winrm_exec probe kind (contract: libs/probes/winrmexec): log in
// to a Windows host over WS-Management with the first credential that works and run
// PowerShell scripts or cmd command lines, each with its own timeout.
//
// The WS-Management client is github.com/masterzen/winrm (shells, commands, Receive
// streams, Signal, Delete) and NTLM is github.com/Azure/go-ntlmssp; what this package adds
// is the transport they run on: every connection goes through the site's guarded dialer,
// every request carries the probe's context (deadline, cancellation, per-command timeouts),
// TLS is verified unless the credential allows otherwise, and Basic auth — the password in
// each request — is sent only over verified TLS or with the credential's allow_insecure.
//
// Credentials (type winrm): Username ("user", "DOMAIN\user" or "user@domain") with Secret
// as the password; fields.auth ntlm (default) or basic.
package winrmexec

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ntlmssp "github.com/Azure/go-ntlmssp"
	"github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"

	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/winrmexec"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/capture"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/execlimit"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// The contract of the kind (libs/probes/winrmexec): what a probe asks and what it answers.
type (
	Command = contract.Command
	Params  = contract.Params
	Output  = contract.Output
	Result  = contract.Result
)

// Config of winrm_exec: the limits every exec kind has (Validate comes with them).
type Config struct {
	execlimit.Limits `yaml:",inline"`
}

type factory struct{}

// NewFactory returns the winrm_exec kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec { return contract.Spec }
func (factory) DefaultConfig() any {
	return Config{Limits: execlimit.Default(50)}
}

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "winrm_exec: config of type %T", cfg)
	}
	return &runner{cfg: c, set: set}, nil
}

type runner struct {
	cfg Config
	set probe.Settings
}

type command struct {
	cmd, shell string
	timeout    time.Duration
}

// options are the connection settings every credential is tried with.
type options struct {
	ep        target.Endpoint
	https     bool
	auth      string // "" = the credential's fields.auth, else ntlm
	tls       *tls.Config
	verified  bool // TLS with certificate verification
	connectTO time.Duration
}

func (r *runner) Run(ctx context.Context, req probe.Request, _ probe.Emit) (any, error) {
	if err := probe.CheckCredentials(contract.Kind, req.Credentials); err != nil {
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
	defShell := strings.ToLower(p.Shell)
	if defShell == "" {
		defShell = contract.ShellPowerShell
	}
	cmds := make([]command, len(p.Commands))
	for i, c := range p.Commands {
		sh := strings.ToLower(c.Shell)
		switch sh {
		case "":
			sh = defShell
		case contract.ShellPowerShell, contract.ShellCmd:
		default:
			return nil, param.Bad(fmt.Sprintf("commands[%d].shell", i), "%s: want powershell or cmd", param.Quote(c.Shell))
		}
		cmds[i] = command{c.Cmd, sh, timeouts[i]}
	}
	connectTO, err := r.cfg.Connect(p.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	maxOut, err := r.cfg.PerStream(p.MaxOutput, r.set.MaxOutput, len(cmds))
	if err != nil {
		return nil, err
	}
	creds := req.Credentials
	if len(creds) == 0 {
		return nil, probe.Errorf(probe.CodeBadParams, "credentials: winrm_exec needs at least one winrm credential")
	}
	defPort := 5985
	if p.HTTPS {
		defPort = 5986
	}
	port, err := param.Port("port", p.Port, defPort)
	if err != nil {
		return nil, err
	}
	ep, err := target.Resolve(ctx, r.set, req.Target, port)
	if err != nil {
		return nil, err
	}
	o := options{ep: ep, https: p.HTTPS, auth: strings.ToLower(p.Auth), connectTO: connectTO}
	if p.HTTPS {
		o.tls, err = tlsConfig(ep, p)
		if err != nil {
			return nil, err
		}
		o.verified = !p.InsecureSkipVerify
	} else if p.CAPEM != "" || p.InsecureSkipVerify || p.TLSServerName != "" {
		return nil, param.Bad("https", "ca_pem, tls_server_name and insecure_skip_verify apply to https only: set https")
	}
	// refused before the first byte leaves: a secret only goes where its credential allows
	for _, c := range creds {
		switch auth := o.authOf(c); {
		case auth != contract.AuthNTLM && auth != contract.AuthBasic:
			return nil, probe.Errorf(probe.CodeBadParams, "credential %s: fields.auth %s: want ntlm or basic", c.Name, param.Quote(auth))
		case auth == contract.AuthBasic && !o.verified:
			if err := probe.RequireSecure([]probe.Credential{c}, map[bool]string{true: "HTTPS without certificate verification", false: "plaintext HTTP with Basic auth"}[p.HTTPS]); err != nil {
				return nil, err
			}
		case o.https && !o.verified:
			if err := probe.RequireSecure([]probe.Credential{c}, "HTTPS without certificate verification"); err != nil {
				return nil, err
			}
		}
	}
	secrets := param.Secrets(creds)
	start := r.set.Time()
	res := Result{IP: ep.IP.String(), Port: ep.Port, HTTPS: p.HTTPS, FailedCredentials: []string{}, Outputs: []Output{}}
	var sess *session
	for _, c := range creds {
		s, err := r.login(ctx, o, c)
		if s != nil && s.tr.server.Load() != nil {
			res.Server = *s.tr.server.Load()
		}
		if err == nil {
			sess, res.Credential, res.Username, res.Auth = s, c.Name, c.Username, o.authOf(c)
			break
		}
		s.close()
		var ae *authError
		if errors.As(err, &ae) {
			if r.set.Logger != nil {
				r.set.Logger.Debug("winrm credential refused", "target", ep.Addr(), "credential", c)
			}
			res.FailedCredentials = append(res.FailedCredentials, c.Name)
			continue
		}
		return nil, param.RedactError(err, secrets)
	}
	if sess == nil {
		res.DurationMS = r.set.Since(start).Milliseconds()
		return res, probe.Errorf(probe.CodeAuth, "%s refused every credential (%s)", ep.Addr(), strings.Join(res.FailedCredentials, ", "))
	}
	defer sess.close()
	for _, c := range cmds {
		out := r.exec(ctx, sess, c, maxOut)
		out.Stdout = param.RedactBlob(out.Stdout, secrets)
		out.Stderr = param.RedactBlob(out.Stderr, secrets)
		out.Error = param.Redact(out.Error, secrets...)
		res.Outputs = append(res.Outputs, out)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if execlimit.Stop(p.StopOnError, out.Error, out.TimedOut, out.ExitCode) {
			break // the shell is gone, or stop_on_error after a failure
		}
	}
	res.DurationMS = r.set.Since(start).Milliseconds()
	return res, nil
}

func (o options) authOf(c probe.Credential) string {
	if o.auth != "" {
		return o.auth
	}
	if a := strings.ToLower(strings.TrimSpace(c.Fields["auth"])); a != "" {
		return a
	}
	return contract.AuthNTLM
}

func tlsConfig(ep target.Endpoint, p Params) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: ep.Name, InsecureSkipVerify: p.InsecureSkipVerify} //nolint:gosec // refused without allow_insecure
	if p.TLSServerName != "" {
		cfg.ServerName = p.TLSServerName
	}
	if p.CAPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(p.CAPEM)) {
			return nil, param.Bad("ca_pem", "no PEM certificate in it")
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// session is an authenticated connection with an open remote shell.
type session struct {
	tr     *transport
	client *winrm.Client
	shell  *winrm.Shell
}

func (s *session) close() {
	if s == nil {
		return
	}
	if s.shell != nil {
		// a shell left open counts against the user's quota (MaxShellsPerUser) until it
		// idles out: delete it, briefly, even when the probe's own time is up
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.tr.setContext(ctx)
		_ = s.shell.Close()
		cancel()
	}
	s.tr.http.CloseIdleConnections()
}

// login authenticates with one credential by creating the remote shell, on a connection
// of its own (NTLM authenticates a connection).
func (r *runner) login(ctx context.Context, o options, c probe.Credential) (*session, error) {
	tr := newTransport(r.set, o, c)
	cctx, cancel := context.WithTimeout(ctx, o.connectTO)
	defer cancel()
	tr.setContext(cctx)
	params := *winrm.DefaultParameters
	params.TransportDecorator = func() winrm.Transporter { return tr }
	ep := winrm.NewEndpoint(o.ep.IP.String(), o.ep.Port, o.https, false, nil, nil, nil, o.connectTO)
	client, err := winrm.NewClientWithParameters(ep, c.Username, c.Secret, &params)
	if err != nil {
		return nil, probe.Errorf(probe.CodeInternal, "winrm client: %v", err)
	}
	s := &session{tr: tr, client: client}
	shell, err := client.CreateShell()
	if err != nil {
		return s, r.classify(ctx, cctx, o, err, "no WinRM shell")
	}
	s.shell = shell
	return s, nil
}

// classify turns a transport error into the probe's code.
func (r *runner) classify(ctx, cctx context.Context, o options, err error, what string) error {
	var pe *probe.Error
	var ae *authError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &pe):
		return pe
	case ctx.Err() != nil:
		return ctx.Err()
	case cctx.Err() != nil || target.IsTimeout(err):
		return probe.Errorf(probe.CodeTimeout, "%s: %s within %s", o.ep.Addr(), what, o.connectTO)
	}
	var de *dialError
	if errors.As(err, &de) {
		return target.DialError(cctx, o.ep.Addr(), de.err)
	}
	return probe.Errorf(probe.CodeProtocol, "%s: %s: %v", o.ep.Addr(), what, err)
}

func (r *runner) exec(ctx context.Context, s *session, c command, maxOut int) Output {
	out := Output{Command: c.cmd, Shell: c.shell}
	start := r.set.Time()
	defer func() { out.DurationMS = r.set.Since(start).Milliseconds() }()
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	s.tr.setContext(cctx)
	line := c.cmd
	if c.shell == contract.ShellPowerShell {
		line = winrm.Powershell(c.cmd)
	}
	cmd, err := s.shell.Execute(line)
	if err != nil {
		out.Error = r.cmdError(ctx, cctx, err, c.timeout, &out)
		return out
	}
	stdout, stderr := capture.NewBuffer(maxOut), capture.NewBuffer(maxOut)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(stdout, cmd.Stdout) }()
	go func() { defer wg.Done(); _, _ = io.Copy(stderr, cmd.Stderr) }()
	cmd.Wait()
	wg.Wait()
	failed := cctx.Err() != nil
	if failed && ctx.Err() == nil {
		// the command's own time is up: terminate it on the host, briefly
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		s.tr.setContext(sctx)
		_ = cmd.Close()
		scancel()
	} else if !failed {
		_ = cmd.Close() // Signal terminate: Windows releases the command's resources
	}
	out.Stdout = stdout.Blob(failed)
	errText := stderr.Bytes()
	if c.shell == contract.ShellPowerShell {
		errText = []byte(decodeCLIXML(string(errText)))
	}
	out.Stderr = capture.Make(errText, stderr.Len()-int64(len(stderr.Bytes()))+int64(len(errText)), failed)
	if failed {
		out.Error = r.cmdError(ctx, cctx, cctx.Err(), c.timeout, &out)
		return out
	}
	code := cmd.ExitCode()
	out.ExitCode = &code
	return out
}

func (r *runner) cmdError(ctx, cctx context.Context, err error, timeout time.Duration, out *Output) string {
	switch {
	case ctx.Err() != nil:
		return ctx.Err().Error()
	case cctx.Err() != nil:
		out.TimedOut = true
		return fmt.Sprintf("no exit within %s: terminated", timeout)
	}
	return err.Error()
}

type authError struct{ status int }

func (e *authError) Error() string { return fmt.Sprintf("authentication failed (HTTP %d)", e.status) }

type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// transport is the winrm.Transporter every request of one credential goes through: one
// HTTP connection (NTLM authenticates the connection), the probe's current context, the
// credential as NTLM or Basic.
type transport struct {
	http     *http.Client
	url      string
	user     string
	password string
	basic    bool
	ctx      atomic.Pointer[context.Context]
	server   atomic.Pointer[string]
}

func newTransport(set probe.Settings, o options, c probe.Credential) *transport {
	dial := target.Dialer(set)
	base := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err}
			}
			return conn, nil
		},
		TLSClientConfig:     o.tls,
		TLSHandshakeTimeout: o.connectTO,
		// one connection: the NTLM handshake's three legs and every request after it
		// must share it, and a site's Windows host should not see a flood of them
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		Proxy:               nil,
	}
	scheme := "http"
	if o.https {
		scheme = "https"
	}
	t := &transport{url: scheme + "://" + o.ep.Addr() + "/wsman", user: c.Username, password: c.Secret, basic: o.authOf(c) == contract.AuthBasic}
	var rt http.RoundTripper = base
	if !t.basic {
		// AllowBasicAuth false: a listener offering only Basic never gets the password
		rt = ntlmssp.Negotiator{RoundTripper: base}
	}
	t.http = &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return t
}

func (t *transport) setContext(ctx context.Context) { t.ctx.Store(&ctx) }

// Transport is the winrm.Transporter's setup hook: the HTTP client is already built.
func (t *transport) Transport(*winrm.Endpoint) error { return nil }

// Post sends one SOAP message and returns the answer's envelope.
func (t *transport) Post(_ *winrm.Client, m *soap.SoapMessage) (string, error) {
	ctx := *t.ctx.Load()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, strings.NewReader(m.String()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	req.Header.Set("User-Agent", "Microsoft WinRM Client")
	// the NTLM negotiator reads the credential from here and never sends it as such
	req.SetBasicAuth(t.user, t.password)
	resp, err := t.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if s := resp.Header.Get("Server"); s != "" && t.server.Load() == nil {
		t.server.Store(&s)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxEnvelope))
	if err != nil {
		return "", err
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return "", &authError{status: resp.StatusCode}
	case resp.StatusCode == http.StatusOK && strings.Contains(resp.Header.Get("Content-Type"), "application/soap+xml"):
		return string(body), nil
	case strings.Contains(resp.Header.Get("Content-Type"), "application/soap+xml"):
		f := parseFault(body)
		// the client library polls again on a Receive that timed out: it looks for this word
		if f.timedOut {
			return "", fmt.Errorf("OperationTimeout: %s", f.text)
		}
		return "", probe.Errorf(contract.CodeFault, "%s: HTTP %d: %s", t.url, resp.StatusCode, f.text)
	}
	return "", probe.Errorf(probe.CodeProtocol, "%s: HTTP %d %s: not a WS-Management answer", t.url, resp.StatusCode, resp.Header.Get("Content-Type"))
}

// maxEnvelope bounds one answer: the client asks for envelopes of at most 150 KiB.
const maxEnvelope = 4 << 20

type fault struct {
	text     string
	timedOut bool
}

// parseFault reads a SOAP fault's subcode and reason.
func parseFault(body []byte) fault {
	var env struct {
		Body struct {
			Fault struct {
				Code struct {
					Subcode struct {
						Value string `xml:"Value"`
					} `xml:"Subcode"`
				} `xml:"Code"`
				Reason struct {
					Text []string `xml:"Text"`
				} `xml:"Reason"`
				Detail struct {
					Inner string `xml:",innerxml"`
				} `xml:"Detail"`
			} `xml:"Fault"`
		} `xml:"Body"`
	}
	if err := xml.Unmarshal(body, &env); err != nil {
		return fault{text: "unreadable SOAP fault"}
	}
	f := env.Body.Fault
	text := strings.TrimSpace(strings.Join(f.Reason.Text, " "))
	if text == "" {
		text = f.Code.Subcode.Value
	}
	return fault{text: text, timedOut: strings.HasSuffix(f.Code.Subcode.Value, ":TimedOut")}
}
