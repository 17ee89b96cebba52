// Package tlscert is the tls_cert probe kind: it completes a TLS handshake (directly, or
// after LDAP or SMTP StartTLS) and summarises the certificate chain the target presents —
// subject, SANs, issuer, validity, days left, fingerprints — and whether it verifies.
//
// Its capability is "tls", not "http": certificates live on LDAPS, SMTP and database ports
// as much as on web servers, and a site may allow reading them without allowing HTTP
// requests.
package tlscert

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/tlscert"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/certinfo"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// The contract of the kind (libs/probes/tlscert): what a probe asks and what it answers.
type (
	Params = contract.Params
	Result = contract.Result
)

// Config of tls_cert.
type Config struct {
	Timeout    time.Duration `yaml:"timeout"` // default handshake timeout
	MaxTimeout time.Duration `yaml:"max_timeout"`
}

type factory struct{}

// NewFactory returns the tls_cert kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec { return contract.Spec }
func (factory) DefaultConfig() any {
	return Config{Timeout: 10 * time.Second, MaxTimeout: 2 * time.Minute}
}

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "tls_cert: config of type %T", cfg)
	}
	return &runner{cfg: c, set: set}, nil
}

type runner struct {
	cfg Config
	set probe.Settings
}

func (r *runner) now() time.Time {
	return r.set.Time()
}

func (r *runner) Run(ctx context.Context, req probe.Request, _ probe.Emit) (any, error) {
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	port, err := param.Port("port", p.Port, 443)
	if err != nil {
		return nil, err
	}
	timeout, err := param.Duration("timeout", p.Timeout, r.cfg.Timeout, r.cfg.MaxTimeout)
	if err != nil {
		return nil, err
	}
	switch p.StartTLS {
	case "", "ldap", "smtp":
	default:
		return nil, param.Bad("starttls", "%s: want ldap or smtp", param.Quote(p.StartTLS))
	}
	ep, err := target.Resolve(ctx, r.set, req.Target, port)
	if err != nil {
		return nil, err
	}
	sni := p.ServerName
	if sni == "" && ep.IsName() {
		sni = ep.Name
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := r.set.Time()
	conn, err := target.Dialer(r.set)(ctx, "tcp", ep.Addr())
	if err != nil {
		return nil, target.DialError(ctx, ep.Addr(), err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(clock.Past) })
	defer stop()
	if p.StartTLS != "" {
		if err := startTLS(conn, p.StartTLS); err != nil {
			return nil, handshakeError(ctx, ep.Addr(), err)
		}
	}
	tc := tls.Client(conn, &tls.Config{ServerName: sni, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, handshakeError(ctx, ep.Addr(), err)
	}
	verifyName := sni
	if verifyName == "" {
		verifyName = ep.IP.String()
	}
	res := Result{IP: ep.IP.String(), Port: ep.Port, TLS: certinfo.State(tc.ConnectionState(), verifyName, nil, r.now(), true)}
	res.DurationMS = r.set.Since(start).Milliseconds()
	return res, nil
}

func handshakeError(ctx context.Context, addr string, err error) error {
	switch {
	case ctx.Err() != nil:
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return probe.Errorf(probe.CodeTimeout, "%s: no TLS handshake in time", addr)
		}
		return ctx.Err()
	case target.IsTimeout(err):
		return probe.Errorf(probe.CodeTimeout, "%s: no TLS handshake in time", addr)
	}
	var pe *probe.Error
	if errors.As(err, &pe) {
		return pe
	}
	return probe.Errorf(probe.CodeProtocol, "%s: TLS handshake failed: %v", addr, err)
}

// startTLS upgrades LDAP (extended operation 1.3.6.1.4.1.1466.20037) or SMTP (EHLO, STARTTLS).
func startTLS(c net.Conn, proto string) error {
	switch proto {
	case "ldap":
		// LDAPMessage{id 1, ExtendedRequest{requestName "1.3.6.1.4.1.1466.20037"}}
		req := []byte{0x30, 0x1d, 0x02, 0x01, 0x01, 0x77, 0x18, 0x80, 0x16}
		req = append(req, "1.3.6.1.4.1.1466.20037"...)
		if _, err := c.Write(req); err != nil {
			return err
		}
		code, err := readLDAPResultCode(bufio.NewReader(io.LimitReader(c, 4096)))
		if err != nil {
			return err
		}
		if code != 0 {
			return probe.Errorf(probe.CodeUnsupported, "the LDAP server refused StartTLS (result code %d)", code)
		}
		return nil
	case "smtp":
		r := bufio.NewReader(io.LimitReader(c, 64<<10))
		if _, err := smtpReply(r, "220"); err != nil {
			return err
		}
		if _, err := io.WriteString(c, "EHLO outpost.invalid\r\n"); err != nil {
			return err
		}
		lines, err := smtpReply(r, "250")
		if err != nil {
			return err
		}
		if !strings.Contains(strings.ToUpper(strings.Join(lines, "\n")), "STARTTLS") {
			return probe.Errorf(probe.CodeUnsupported, "the SMTP server does not offer STARTTLS")
		}
		if _, err := io.WriteString(c, "STARTTLS\r\n"); err != nil {
			return err
		}
		_, err = smtpReply(r, "220")
		return err
	}
	return nil
}

func smtpReply(r *bufio.Reader, want string) ([]string, error) {
	var lines []string
	for i := 0; i < 100; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[:3] != want {
			return nil, probe.Errorf(probe.CodeProtocol, "SMTP: want %s, got %q", want, truncate(line, 80))
		}
		if line[3] == ' ' {
			return lines, nil
		}
	}
	return nil, probe.Errorf(probe.CodeProtocol, "SMTP: reply too long")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// readLDAPResultCode reads one LDAPMessage and returns the resultCode of its response.
func readLDAPResultCode(r *bufio.Reader) (int, error) {
	tag, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	if tag != 0x30 {
		return 0, probe.Errorf(probe.CodeProtocol, "not an LDAP message (first byte 0x%02x)", tag)
	}
	n, err := berLen(r)
	if err != nil || n < 5 || n > 4096 {
		return 0, probe.Errorf(probe.CodeProtocol, "malformed LDAP message")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	// messageID INTEGER, then [APPLICATION x] { resultCode ENUMERATED ... }
	i := 0
	if body[i] != 0x02 {
		return 0, probe.Errorf(probe.CodeProtocol, "malformed LDAP message")
	}
	i += 2 + int(body[i+1])
	if i+2 > len(body) {
		return 0, probe.Errorf(probe.CodeProtocol, "malformed LDAP message")
	}
	i++ // application tag
	l := int(body[i])
	i++
	if l&0x80 != 0 {
		i += l & 0x7f
	}
	if i+3 > len(body) || body[i] != 0x0a || body[i+1] != 1 {
		return 0, probe.Errorf(probe.CodeProtocol, "malformed LDAP result")
	}
	return int(body[i+2]), nil
}

func berLen(r *bufio.Reader) (int, error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	if b&0x80 == 0 {
		return int(b), nil
	}
	k := int(b & 0x7f)
	if k == 0 || k > 3 {
		return 0, fmt.Errorf("bad BER length")
	}
	n := 0
	for range k {
		c, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n = n<<8 | int(c)
	}
	return n, nil
}
