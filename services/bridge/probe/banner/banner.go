// Package banner is the banner probe kind: connect to a TCP port (optionally over TLS),
// optionally send a few bytes, read what the service says, and identify it (ssh, smtp,
// ftp, http, mysql, telnet, rdp, ...). A port that accepts and says nothing within
// read_timeout is reported as silent, not as an error; an endless talker is cut at
// max_bytes and reported truncated.
package banner

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/banner"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/capture"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// The contract of the kind (libs/probes/banner): what a probe asks and what it answers.
type (
	Params = contract.Params
	Result = contract.Result
)

// Config of banner.
type Config struct {
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	ReadTimeout    time.Duration `yaml:"read_timeout"`
	MaxTimeout     time.Duration `yaml:"max_timeout"`
	MaxBytes       int           `yaml:"max_bytes"` // hard cap of max_bytes
}

type factory struct{}

// NewFactory returns the banner kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec { return contract.Spec }
func (factory) DefaultConfig() any {
	return Config{ConnectTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, MaxTimeout: time.Minute, MaxBytes: 64 << 10}
}

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "banner: config of type %T", cfg)
	}
	return &runner{cfg: c, set: set}, nil
}

type runner struct {
	cfg Config
	set probe.Settings
}

// idleAfterData ends the read this long after the last bytes: multi-line greetings
// arrive in a few segments, but nobody waits for a talker to finish.
const idleAfterData = 300 * time.Millisecond

func (r *runner) Run(ctx context.Context, req probe.Request, _ probe.Emit) (any, error) {
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	_, tport, err := target.Split(req.Target)
	if err != nil {
		return nil, err
	}
	if p.Port == 0 && tport == 0 {
		return nil, param.Bad("port", "missing (or give the target as host:port)")
	}
	port, err := param.Port("port", p.Port, tport)
	if err != nil {
		return nil, err
	}
	if tport != 0 {
		port = tport
	}
	connectTO, err := param.Duration("connect_timeout", p.ConnectTimeout, r.cfg.ConnectTimeout, r.cfg.MaxTimeout)
	if err != nil {
		return nil, err
	}
	readTO, err := param.Duration("read_timeout", p.ReadTimeout, r.cfg.ReadTimeout, r.cfg.MaxTimeout)
	if err != nil {
		return nil, err
	}
	maxBytes, err := param.Int("max_bytes", p.MaxBytes, 4096, min(r.cfg.MaxBytes, capture.Limit(r.set.MaxOutput)/3))
	if err != nil {
		return nil, err
	}
	if len(p.Send) > 4096 {
		return nil, param.Bad("send", "%d bytes is beyond the 4096-byte limit", len(p.Send))
	}
	ep, err := target.Resolve(ctx, r.set, req.Target, port)
	if err != nil {
		return nil, err
	}
	start := r.set.Time()
	cctx, cancel := context.WithTimeout(ctx, connectTO)
	conn, err := target.Dialer(r.set)(cctx, "tcp", ep.Addr())
	if err != nil {
		err = target.DialError(cctx, ep.Addr(), err)
		cancel()
		return nil, err
	}
	defer conn.Close()
	// cancellation or the probe's deadline cut any read or write at once
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(clock.Past) })
	defer stop()
	if p.TLS {
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: serverName(ep)})
		err := tc.HandshakeContext(cctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if target.IsTimeout(err) {
				return nil, probe.Errorf(probe.CodeTimeout, "%s: no TLS handshake within %s", ep.Addr(), connectTO)
			}
			return nil, probe.Errorf(probe.CodeProtocol, "%s: TLS handshake failed: %v", ep.Addr(), err)
		}
		conn = tc
	} else {
		cancel()
	}
	res := Result{IP: ep.IP.String(), Port: ep.Port, TLS: p.TLS, ConnectMS: r.set.Since(start).Milliseconds()}
	if p.Send != "" {
		conn.SetWriteDeadline(wall.Now().Add(readTO))
		if _, err := io.WriteString(conn, p.Send); err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	buf := capture.NewBuffer(maxBytes)
	deadline := wall.Now().Add(readTO)
	chunk := make([]byte, 4096)
	ended := false
	for buf.Len() <= int64(maxBytes) {
		d := deadline
		if buf.Len() > 0 {
			if idle := wall.Now().Add(idleAfterData); idle.Before(d) {
				d = idle
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		conn.SetReadDeadline(d)
		n, err := conn.Read(chunk)
		buf.Write(chunk[:n])
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			ended = errors.Is(err, io.EOF) || !errors.Is(err, os.ErrDeadlineExceeded)
			break
		}
	}
	b := buf.Bytes()
	res.Banner = buf.Blob(buf.Truncated() && !ended)
	res.Printable = escape(b, 2048)
	res.Info = Parse(b)
	res.Silent = buf.Len() == 0
	res.DurationMS = r.set.Since(start).Milliseconds()
	return res, nil
}

// wall is the real clock: read and write deadlines are kept by the runtime's poller on
// wall time, whatever clock the bridge runs on.
var wall = clock.Real()

func serverName(ep target.Endpoint) string {
	if ep.IsName() {
		return ep.Name
	}
	return ""
}

// escape shows bytes as text: printable UTF-8 kept, the rest as \r \n \t \xNN.
func escape(b []byte, n int) string {
	var sb strings.Builder
	for len(b) > 0 {
		if sb.Len() >= n {
			sb.WriteString("…")
			break
		}
		r, size := utf8.DecodeRune(b)
		switch {
		case r == '\\':
			sb.WriteString(`\\`)
		case r == '\r':
			sb.WriteString(`\r`)
		case r == '\n':
			sb.WriteString(`\n`)
		case r == '\t':
			sb.WriteString(`\t`)
		case (r == utf8.RuneError && size <= 1) || r < 0x20 || r == 0x7f:
			sb.WriteString(`\x`)
			if b[0] < 0x10 {
				sb.WriteByte('0')
			}
			sb.WriteString(strconv.FormatUint(uint64(b[0]), 16))
			size = 1
		default:
			sb.WriteRune(r)
		}
		b = b[size:]
	}
	return sb.String()
}
