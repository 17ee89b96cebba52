package collect

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	syslog "github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/rfc3164"
	"github.com/leodido/go-syslog/v4/rfc5424"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// startSyslog listens on the address over UDP (one message per datagram) and TCP (RFC 6587:
// octet counting when a frame starts with a digit, else one message per line).
func (c *Collectors) startSyslog(ctx context.Context) error {
	c.counter(api.SourceSyslog)
	c.syslogBatch = c.batcher(ctx, api.SourceSyslog)
	pc, err := net.ListenPacket("udp", c.cfg.Syslog)
	if err != nil {
		return fmt.Errorf("--collect-syslog %s (udp): %w", c.cfg.Syslog, err)
	}
	ln, err := net.Listen("tcp", c.cfg.Syslog)
	if err != nil {
		pc.Close()
		return fmt.Errorf("--collect-syslog %s (tcp): %w", c.cfg.Syslog, err)
	}
	c.Addrs["syslog/udp"], c.Addrs["syslog/tcp"] = pc.LocalAddr(), ln.Addr()
	cctx, cancel := context.WithCancel(ctx)
	c.stops = append(c.stops, func() { cancel(); pc.Close(); ln.Close() })
	go func() { <-cctx.Done(); pc.Close(); ln.Close() }()
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.syslogUDP(cctx, pc) }()
	go func() { defer c.wg.Done(); c.syslogTCP(cctx, ln) }()
	c.log.Info("syslog collector listening (udp and tcp)", "addr", c.cfg.Syslog)
	return nil
}

// startSyslogTLS listens for syslog over TLS (RFC 5425): each connection is read as the TCP
// stream is — octet-counting frames, which RFC 5425 requires (a sender's LF-terminated
// lines are accepted too). A failed handshake is counted and kept with its reason.
func (c *Collectors) startSyslogTLS(ctx context.Context) error {
	c.counter(api.SourceSyslog)
	c.syslogBatch = c.batcher(ctx, api.SourceSyslog)
	addr := c.cfg.syslogTLSAddr()
	cert, err := tls.LoadX509KeyPair(c.cfg.SyslogTLSCert, c.cfg.SyslogTLSKey)
	if err != nil {
		return fmt.Errorf("--collect-syslog-tls %s,%s: %w", c.cfg.SyslogTLSCert, c.cfg.SyslogTLSKey, err)
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return fmt.Errorf("--collect-syslog-tls (listening on %s): %w", addr, err)
	}
	c.Addrs["syslog/tls"] = ln.Addr()
	cctx, cancel := context.WithCancel(ctx)
	c.stops = append(c.stops, func() { cancel(); ln.Close() })
	go func() { <-cctx.Done(); ln.Close() }()
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.syslogTCP(cctx, ln) }()
	c.log.Info("syslog collector listening (tls)", "addr", addr)
	return nil
}

func (c *Collectors) syslogUDP(ctx context.Context, pc net.PacketConn) {
	p := newSyslogParser(c.clock)
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		c.syslogMessage(ctx, p, bytes.TrimRight(buf[:n], "\r\n\x00"), from)
	}
}

func (c *Collectors) syslogTCP(ctx context.Context, ln net.Listener) {
	slots := make(chan struct{}, c.cfg.MaxConns)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			c.reject(ctx, api.SourceSyslog, fmt.Sprintf("connection from %s refused: %d connections open already", conn.RemoteAddr(), c.cfg.MaxConns), nil)
			conn.Close()
			continue
		}
		c.wg.Add(1)
		go func() {
			defer func() { conn.Close(); <-slots; c.wg.Done() }()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			if tc, ok := conn.(*tls.Conn); ok {
				hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := tc.HandshakeContext(hctx)
				cancel()
				if err != nil {
					if ctx.Err() == nil {
						c.reject(ctx, api.SourceSyslog, fmt.Sprintf("TLS handshake from %s: %v", conn.RemoteAddr(), err), nil)
					}
					return
				}
			}
			c.syslogStream(ctx, conn)
		}()
	}
}

// syslogStream reads frames until the sender closes. A frame it cannot read (a length
// prefix that is not a number, a message over MaxMessage) is rejected and the stream goes on
// at the next line.
func (c *Collectors) syslogStream(ctx context.Context, conn net.Conn) {
	p := newSyslogParser(c.clock)
	r := bufio.NewReaderSize(conn, 64<<10)
	from := conn.RemoteAddr()
	for {
		first, err := r.Peek(1)
		if err != nil {
			return
		}
		if first[0] >= '1' && first[0] <= '9' {
			msg, err := c.octetFrame(r)
			if err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
					return
				}
				c.reject(ctx, api.SourceSyslog, fmt.Sprintf("from %s: %v", from, err), msg)
				if errors.Is(err, errSkipped) {
					continue // the frame's length was known: still in step
				}
				if _, err := readLine(r, c.cfg.MaxMessage); err != nil && !errors.Is(err, errTooLong) {
					return
				}
				continue
			}
			c.syslogMessage(ctx, p, msg, from)
			continue
		}
		line, err := readLine(r, c.cfg.MaxMessage)
		if errors.Is(err, errTooLong) {
			c.reject(ctx, api.SourceSyslog, fmt.Sprintf("from %s: a line over %d bytes", from, c.cfg.MaxMessage), line)
			continue
		}
		if len(line) > 0 {
			c.syslogMessage(ctx, p, bytes.TrimRight(line, "\r\x00"), from)
		}
		if err != nil {
			return
		}
	}
}

var (
	errTooLong = errors.New("too long")
	errSkipped = errors.New("skipped")
)

// readLine reads up to '\n' (not included). A line over max is read to its end and
// returned cut, with errTooLong.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	long := false
	for {
		chunk, err := r.ReadSlice('\n')
		if !long {
			line = append(line, chunk...)
			if len(line) > max+1 {
				long, line = true, line[:SampleMax]
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		if long {
			return line, errTooLong
		}
		return line, err
	}
}

// octetFrame reads "LEN SP MSG".
func (c *Collectors) octetFrame(r *bufio.Reader) ([]byte, error) {
	head, err := r.ReadSlice(' ')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return head[:min(len(head), 64)], errors.New("an octet-counting frame whose length is not followed by a space")
		}
		return nil, err
	}
	n, err := strconv.Atoi(string(head[:len(head)-1]))
	if err != nil || n <= 0 {
		return head, fmt.Errorf("octet-counting frame length %q is not a number", head[:len(head)-1])
	}
	if n > c.cfg.MaxMessage {
		// Skip the frame: its length is known, so the stream stays in step.
		if _, err := r.Discard(n); err != nil {
			return nil, err
		}
		return head, fmt.Errorf("a message of %d bytes, over %d (%w)", n, c.cfg.MaxMessage, errSkipped)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return bytes.TrimRight(msg, "\r\n\x00"), nil
}

// syslogParser tries RFC 5424 first, then RFC 3164 (best effort: real devices bend it),
// which must at least find a valid PRI.
type syslogParser struct {
	rfc5424, rfc3164 syslog.Machine
}

// clockYear gives RFC 3164 timestamps (which have none) the year of the injected clock.
type clockYear struct{ c clock.Clock }

func (y clockYear) Apply() int { return y.c.Now().Year() }

func newSyslogParser(clk clock.Clock) *syslogParser {
	return &syslogParser{rfc5424: rfc5424.NewParser(),
		rfc3164: rfc3164.NewParser(rfc3164.WithBestEffort(), rfc3164.WithYear(clockYear{clk}))}
}

func (c *Collectors) syslogMessage(ctx context.Context, p *syslogParser, msg []byte, from net.Addr) {
	if len(msg) == 0 {
		return
	}
	ev, err := p.event(msg, from, c.clock.Now())
	if err != nil {
		c.reject(ctx, api.SourceSyslog, fmt.Sprintf("from %s: %v", from, err), msg)
		return
	}
	ev.Site = c.cfg.Site
	// Into the source's batch (see BatchConfig for what lingers there): syslog has no
	// acknowledgement to hold back.
	c.syslogBatch.add(ev)
}

// event maps a syslog message: node is its host name (else the sender's address), type its
// app name, resource its MSGID; the message key is node, app and text, so the same line
// repeated is one alert and different lines are different alerts.
func (p *syslogParser) event(msg []byte, from net.Addr, now time.Time) (*envelope.Event, error) {
	var base *syslog.Base
	var sd *map[string]map[string]string
	if m, err := p.rfc5424.Parse(msg); err == nil && m.Valid() {
		sm := m.(*rfc5424.SyslogMessage)
		base, sd = &sm.Base, sm.StructuredData
	} else if m, err3164 := p.rfc3164.Parse(msg); m != nil && m.Valid() {
		base = &m.(*rfc3164.SyslogMessage).Base
	} else {
		why := "neither RFC 5424 nor RFC 3164"
		if err3164 != nil {
			why += ": " + err3164.Error()
		}
		return nil, errors.New(why)
	}
	str := func(s *string) string {
		if s == nil || *s == "-" {
			return ""
		}
		return *s
	}
	node := str(base.Hostname)
	if node == "" {
		if h, _, err := net.SplitHostPort(from.String()); err == nil {
			node = h
		}
	}
	app := str(base.Appname)
	text := strings.TrimSpace(str(base.Message))
	ev := &envelope.Event{ID: envelope.NewID(), Source: api.SourceSyslog, Type: "syslog", Node: node, Resource: str(base.MsgID),
		Severity: syslogSeverity(base.Severity), Message: text, Time: now.UTC(), Fields: map[string]string{}}
	if app != "" {
		ev.Type = app
	}
	ev.MessageKey = "syslog:" + node + ":" + app + ":" + text
	if len(ev.MessageKey) > api.MaxFieldLen {
		ev.MessageKey = ev.MessageKey[:api.MaxFieldLen]
	}
	if len(ev.Message) > api.MaxMessageLen {
		ev.Message = ev.Message[:api.MaxMessageLen]
	}
	if base.Timestamp != nil && !base.Timestamp.IsZero() {
		ev.Time = base.Timestamp.UTC()
	}
	if f := base.FacilityLevel(); f != nil {
		ev.Fields["facility"] = *f
	}
	if s := base.SeverityLevel(); s != nil {
		ev.Fields["syslog_severity"] = *s
	}
	if v := str(base.ProcID); v != "" {
		ev.Fields["procid"] = v
	}
	if sd != nil {
		ids := make([]string, 0, len(*sd))
		for id := range *sd {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			for k, v := range (*sd)[id] {
				if len(ev.Fields) < api.MaxAdditional {
					ev.Fields["sd."+id+"."+k] = v
				}
			}
		}
	}
	return ev, nil
}

// syslogSeverity maps RFC 5424 severities: emergency, alert, critical → critical; error →
// major; warning → warning; notice, informational, debug → info.
func syslogSeverity(s *uint8) string {
	if s == nil {
		return api.SeverityInfo
	}
	switch {
	case *s <= 2:
		return api.SeverityCritical
	case *s == 3:
		return api.SeverityMajor
	case *s == 4:
		return api.SeverityWarning
	}
	return api.SeverityInfo
}
