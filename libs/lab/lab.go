package lab

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/gosnmp/gosnmp"
)

// idleTimeout closes client connections that send nothing for this long
// (hostile stalls excepted: they wait for the client or for Close).
const idleTimeout = 5 * time.Minute

// Lab is a running simulated network. Close stops it.
type Lab struct {
	cfg      Config
	log      *slog.Logger
	plan     *plan
	byIP     map[netip.Addr]*host
	started  time.Time
	manifest []byte // JSON; Manifest() decodes a fresh copy

	ctx    context.Context // cancelled by Close: stops sleeping/streaming commands
	cancel context.CancelFunc
	wg     sync.WaitGroup
	http   *http.Server
	winrm  *http.Server // every windows_server's WinRM listener (winrm.go)
	tlsCfg *tls.Config

	winMu     sync.Mutex
	winShells map[*host]*winrmState

	mu        sync.Mutex
	closed    bool
	conns     map[net.Conn]struct{}
	closers   []io.Closer
	closeOnce sync.Once
	closeErr  error

	// execs counts the SSH exec requests run per host and command line; running and peak
	// are the exec sessions running now and the most that ran at once: what a test of
	// "exactly once" or "never more than N at a time" asks of a target.
	execMu  sync.Mutex
	execs   map[execKey]int
	running int
	peak    int

	// flaky counts the requests /flaky answered per key (web.go)
	flakyMu sync.Mutex
	flaky   map[string]int
	// feeds are the gauges and events tests serve as other tools' APIs (feeds.go)
	feeds feeds
}

type execKey struct{ ip, command string }

// Execs reports how many times the SSH server of host ip executed command (an exec
// request, as the client sent it).
func (l *Lab) Execs(ip, command string) int {
	l.execMu.Lock()
	defer l.execMu.Unlock()
	return l.execs[execKey{ip, command}]
}

// ExecConcurrency reports how many SSH exec sessions run now, across the lab, and the most
// that ran at once since the lab started or since the last ResetExecPeak.
func (l *Lab) ExecConcurrency() (now, peak int) {
	l.execMu.Lock()
	defer l.execMu.Unlock()
	return l.running, l.peak
}

// ResetExecPeak starts a new high-water mark of concurrent exec sessions from those
// running now.
func (l *Lab) ResetExecPeak() {
	l.execMu.Lock()
	defer l.execMu.Unlock()
	l.peak = l.running
}

// execStarted counts one exec of command on h; the returned func ends it.
func (l *Lab) execStarted(h *host, command string) func() {
	l.execMu.Lock()
	defer l.execMu.Unlock()
	if l.execs == nil {
		l.execs = map[execKey]int{}
	}
	l.execs[execKey{h.ip.String(), command}]++
	l.running++
	l.peak = max(l.peak, l.running)
	return func() {
		l.execMu.Lock()
		l.running--
		l.execMu.Unlock()
	}
}

// Start binds every listener of the lab and serves until Close. ctx bounds
// the startup only. Binding the well-known ports (22, 80, 161, ...) needs
// root, CAP_NET_BIND_SERVICE, or sysctl net.ipv4.ip_unprivileged_port_start=0.
func Start(ctx context.Context, cfg Config) (*Lab, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("lab config: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "lab")
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	t0 := time.Now()
	p, err := newPlan(cfg, now())
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &Lab{
		cfg: cfg, log: logger, plan: p, byIP: map[netip.Addr]*host{}, started: time.Now(),
		ctx: lctx, cancel: cancel, conns: map[net.Conn]struct{}{},
	}
	for _, h := range p.hosts {
		l.byIP[h.ip] = h
	}
	l.tlsCfg = l.tlsConfig()
	l.http = &http.Server{
		Handler:           webHandler{l},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		// scanners that connect and leave make net/http log; keep that at debug
		ErrorLog: log.New(slogWriter{logger}, "", 0),
	}
	l.winrm = l.newWinRMServer()
	m := l.buildManifest()
	if l.manifest, err = json.Marshal(m); err != nil {
		cancel()
		return nil, fmt.Errorf("lab manifest: %w", err)
	}
	listeners := 0
	for _, h := range p.hosts {
		if err := ctx.Err(); err != nil {
			l.Close()
			return nil, fmt.Errorf("lab start: %w", err)
		}
		n, err := l.startHost(h)
		listeners += n
		if err != nil {
			l.Close()
			return nil, err
		}
	}
	logger.Info("lab started", "range", cfg.Range, "hosts", cfg.Hosts, "hostile", cfg.Hostile, "seed", cfg.Seed,
		"listeners", listeners, "took", time.Since(t0).Round(time.Millisecond))
	return l, nil
}

// Manifest returns the truth about the lab (a fresh copy on every call).
func (l *Lab) Manifest() Manifest {
	l.mu.Lock()
	b := l.manifest
	l.mu.Unlock()
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		panic(fmt.Sprintf("lab: manifest does not decode: %v", err))
	}
	return m
}

// WriteManifest writes the manifest as JSON to path, atomically.
func (l *Lab) WriteManifest(path string) error {
	return l.Manifest().WriteFile(path)
}

// Close stops every listener, closes every client connection and waits for
// all the lab's goroutines. It is safe to call more than once.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		closers := l.closers
		conns := make([]net.Conn, 0, len(l.conns))
		for c := range l.conns {
			conns = append(conns, c)
		}
		l.mu.Unlock()
		l.cancel()
		var errs []error
		for _, c := range closers {
			if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		for _, c := range conns {
			c.Close()
		}
		if err := l.http.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		if err := l.winrm.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		l.wg.Wait()
		l.closeErr = errors.Join(errs...)
		l.log.Info("lab stopped")
	})
	return l.closeErr
}

func (l *Lab) buildManifest() Manifest {
	p := l.plan
	m := Manifest{Range: p.prefix.String(), Seed: l.cfg.Seed, Domain: p.domain, ReferenceTime: p.ref, Neighbours: []Neighbour{}}
	hasLDAP := false
	for _, h := range p.hosts {
		m.Hosts = append(m.Hosts, h.m)
		hasLDAP = hasLDAP || h.class == ClassLDAP
	}
	order := map[string]int{}
	for _, h := range p.hosts {
		order[h.m.IP] = h.idx
	}
	m.Neighbours = append(m.Neighbours, p.neighbours...)
	slices.SortFunc(m.Neighbours, func(a, b Neighbour) int {
		return cmp.Or(cmp.Compare(order[a.A], order[b.A]), cmp.Compare(a.APort, b.APort))
	})
	if hasLDAP {
		m.Directory = p.dir.manifest()
	}
	m.AppServices = append([]AppService{}, p.appServices...)
	return m
}

// track registers a client connection so Close can cut it; false means the
// lab is closing and the caller must drop the connection.
func (l *Lab) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Lab) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

func (l *Lab) addCloser(c io.Closer) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.closers = append(l.closers, c)
	return true
}

// listenHint explains the two errors users meet when starting a lab.
func listenHint(addr string, err error) error {
	switch {
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("lab: listen %s: %w (the lab uses the real well-known ports: run as root, grant CAP_NET_BIND_SERVICE, or set sysctl net.ipv4.ip_unprivileged_port_start=0)", addr, err)
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("lab: listen %s: %w (another lab on the same range, or a service bound to 0.0.0.0 on that port; pick another 127.77.x.0/24 range)", addr, err)
	}
	return fmt.Errorf("lab: listen %s: %w", addr, err)
}

// startHost binds the host's ports; it returns how many sockets it opened.
func (l *Lab) startHost(h *host) (int, error) {
	n := 0
	for _, s := range h.services {
		addr := netip.AddrPortFrom(h.ip, uint16(s.port)).String()
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			return n, listenHint(addr, err)
		}
		n++
		if !l.addCloser(ln) {
			ln.Close()
			return n, errors.New("lab: closed while starting")
		}
		switch s.kind {
		case svcHTTP:
			l.goServe(func() { l.http.Serve(ln) })
		case svcHTTPS:
			tl := tls.NewListener(ln, l.tlsCfg)
			l.goServe(func() { l.http.Serve(tl) })
		case svcWinRM:
			l.goServe(func() { l.winrm.Serve(ln) })
		default:
			handler := l.tcpHandler(h, s)
			l.goServe(func() { l.acceptLoop(ln, handler) })
		}
	}
	if h.gear != nil || h.hostile != "" {
		addr := netip.AddrPortFrom(h.ip, 161).String()
		pc, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return n, listenHint(addr, err)
		}
		n++
		if !l.addCloser(pc) {
			pc.Close()
			return n, errors.New("lab: closed while starting")
		}
		uc := pc.(*net.UDPConn)
		if h.hostile != "" {
			l.goServe(func() { l.serveUDP(uc, hostileUDP(h.hostile)) })
		} else {
			a := &snmpAgent{lab: l, h: h, dec: &gosnmp.GoSNMP{Version: gosnmp.Version2c}}
			l.goServe(func() { l.serveUDP(uc, a.handleLazy) })
		}
	}
	return n, nil
}

func (l *Lab) goServe(f func()) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f()
	}()
}

func (l *Lab) acceptLoop(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.ctx.Err() != nil {
				return
			}
			// out of file descriptors or the like: back off, keep serving
			l.log.Debug("accept", "addr", ln.Addr(), "err", err)
			select {
			case <-l.ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		if !l.track(c) {
			c.Close()
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.untrack(c)
			defer c.Close()
			handle(c)
		}()
	}
}

func (l *Lab) serveUDP(c *net.UDPConn, handle func([]byte) [][]byte) {
	buf := make([]byte, 16<<10)
	for {
		n, addr, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.ctx.Err() != nil {
				return
			}
			continue
		}
		for _, out := range handle(buf[:n]) {
			c.WriteToUDPAddrPort(out, addr)
		}
	}
}

// handleLazy builds the MIB and the v3 keys on first use: a lab of a
// thousand hosts starts without computing what nobody asks for.
func (a *snmpAgent) handleLazy(pkt []byte) [][]byte {
	if a.mib == nil {
		a.mib = a.h.buildMIB(a.lab.cfg.Seed)
	}
	if v, ok := peekSNMPVersion(pkt); ok && v == 3 && a.usm == nil {
		c := a.h.m.Credentials.SNMP
		a.usm = &gosnmp.UsmSecurityParameters{UserName: "\x00no v3 user"}
		if a.h.gear.v3 && c != nil {
			usm := &gosnmp.UsmSecurityParameters{
				AuthoritativeEngineID: string(a.h.gear.engineID), UserName: c.Username,
				AuthenticationProtocol: gosnmp.SHA, AuthenticationPassphrase: c.AuthPassword,
				PrivacyProtocol: gosnmp.AES, PrivacyPassphrase: c.PrivPassword,
			}
			if err := usm.InitSecurityKeys(); err != nil {
				a.lab.log.Debug("snmp v3 keys", "host", a.h.ip, "err", err)
				return nil
			}
			a.usm = usm
			a.v3 = &gosnmp.GoSNMP{Version: gosnmp.Version3, SecurityModel: gosnmp.UserSecurityModel, MsgFlags: gosnmp.AuthPriv, SecurityParameters: usm}
		}
	}
	if out := a.handle(pkt); out != nil {
		return [][]byte{out}
	}
	return nil
}

// slogWriter turns net/http's log lines into debug records.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(trimNL(p)), "source", "net/http")
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
