package bus_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/pki"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// tlsHub is an embedded server with TLS on its client port and a wss:// port, certified by
// a local CA as `outpost up` makes it.
type tlsHub struct {
	srv           *bus.Server
	ca            string
	client, wsAdr string
}

func newTLSHub(t *testing.T) *tlsHub {
	t.Helper()
	f, err := pki.Ensure(pki.DefaultConfig(filepath.Join(t.TempDir(), "tls"), []string{"127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := pki.ServerTLS(f.Cert, f.Key, "")
	if err != nil {
		t.Fatal(err)
	}
	h := &tlsHub{ca: f.CA, client: freePort(t), wsAdr: freePort(t)}
	h.srv, err = bus.StartServer(bus.ServerConfig{Name: "tls-hub", StoreDir: t.TempDir(), Listen: h.client, TLS: tc,
		WebSocket: h.wsAdr, WebSocketTLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.srv.Shutdown)
	// An echo service on the hub side, answering in-process.
	nc, err := h.srv.Connect("echo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(append([]byte("echo:"), m.Data...)) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return h
}

// connectProxy is a real HTTP CONNECT forward proxy on loopback that records what it was
// asked; with auth set it wants that "user:password" as Proxy-Authorization: Basic.
type connectProxy struct {
	ln   net.Listener
	auth string
	mu   sync.Mutex
	seen []string // request lines
	cred []string // decoded Proxy-Authorization values
	wg   sync.WaitGroup
	open map[net.Conn]bool
}

func newConnectProxy(t *testing.T, auth string) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln, auth: auth, open: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.open {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *connectProxy) URL(userinfo string) string {
	if userinfo != "" {
		userinfo += "@"
	}
	return "http://" + userinfo + p.ln.Addr().String()
}

func (p *connectProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open == nil {
		return false
	}
	p.open[c] = true
	return true
}

func (p *connectProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.handle(c) }()
	}
}

func (p *connectProxy) handle(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	cred := ""
	if v, ok := strings.CutPrefix(req.Header.Get("Proxy-Authorization"), "Basic "); ok {
		b, _ := base64.StdEncoding.DecodeString(v)
		cred = string(b)
	}
	p.mu.Lock()
	p.seen = append(p.seen, fmt.Sprintf("%s %s %s", req.Method, req.RequestURI, req.Proto))
	p.cred = append(p.cred, cred)
	p.mu.Unlock()
	switch {
	case req.Method != http.MethodConnect:
		io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
		return
	case p.auth != "" && cred != p.auth:
		io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n\r\n")
		return
	}
	host, _, _ := net.SplitHostPort(req.RequestURI)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\n\r\n")
		return
	}
	up, err := net.DialTimeout("tcp", req.RequestURI, 5*time.Second)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	p.track(up)
	defer up.Close()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{})
	go func() { _, _ = io.Copy(up, br); up.Close(); close(done) }()
	_, _ = io.Copy(c, up)
	c.Close()
	<-done
}

func (p *connectProxy) lines() ([]string, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...), append([]string(nil), p.cred...)
}

// logBuf collects a logger's output for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// A bridge-like client reaches a TLS hub through a real CONNECT proxy, over wss:// and
// tls://, with and without proxy auth: request/reply works and the proxy saw the tunnel.
func TestConnectThroughProxy(t *testing.T) {
	h := newTLSHub(t)
	cases := []struct {
		name, url, auth, userinfo string
	}{
		{"wss", "wss://" + h.wsAdr, "", ""},
		{"tls", "tls://" + h.client, "", ""},
		{"wss with proxy auth", "wss://" + h.wsAdr, "bridge:pr0xy-s3cret", "bridge:pr0xy-s3cret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newConnectProxy(t, tc.auth)
			logs := &logBuf{}
			nc, err := bus.Connect(bus.ConnectConfig{URL: tc.url, Name: "bridge-like", CAFile: h.ca, Proxy: p.URL(tc.userinfo),
				Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			var reply *nats.Msg
			eventually(t, 10*time.Second, func() error {
				reply, err = nc.Request("echo", []byte("ping"), time.Second)
				return err
			})
			if string(reply.Data) != "echo:ping" {
				t.Fatalf("reply %q", reply.Data)
			}
			seen, creds := p.lines()
			hostport := strings.TrimPrefix(strings.TrimPrefix(tc.url, "wss://"), "tls://")
			if len(seen) == 0 || seen[0] != "CONNECT "+hostport+" HTTP/1.1" {
				t.Fatalf("the proxy saw %q, want CONNECT %s", seen, hostport)
			}
			if creds[0] != tc.auth {
				t.Fatalf("proxy credentials %q, want %q", creds[0], tc.auth)
			}
			if tc.auth != "" && strings.Contains(logs.String(), "pr0xy-s3cret") {
				t.Fatalf("the proxy password reached the log:\n%s", logs)
			}
		})
	}
}

// A proxy that refuses the client gives an error that says what to do, and never shows the
// password of the proxy URL.
func TestConnectProxyRefuses(t *testing.T) {
	h := newTLSHub(t)
	p := newConnectProxy(t, "bridge:right")
	cases := []struct {
		name, userinfo, want string
	}{
		{"no credentials", "", "407 Proxy Authentication Required: the proxy wants a user"},
		{"wrong password", "bridge:wr0ng-pw", "407 Proxy Authentication Required: the proxy refused the user and password"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logBuf{}
			nc, err := bus.Connect(bus.ConnectConfig{URL: "wss://" + h.wsAdr, Name: "bridge-like", CAFile: h.ca, Proxy: p.URL(tc.userinfo),
				Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			eventually(t, 10*time.Second, func() error {
				if !strings.Contains(logs.String(), tc.want) {
					return fmt.Errorf("log lacks %q:\n%s", tc.want, logs)
				}
				return nil
			})
			if nc.IsConnected() {
				t.Fatal("connected although the proxy refused")
			}
			if strings.Contains(logs.String(), "wr0ng-pw") {
				t.Fatalf("the proxy password reached the log:\n%s", logs)
			}
		})
	}
}

// A plaintext client at the TLS-only ports never connects and is told why.
func TestPlaintextToTLSHub(t *testing.T) {
	h := newTLSHub(t)
	cases := []struct{ name, url, want string }{
		{"nats:// to the TLS client port", "nats://" + h.client, "the hub requires TLS"},
		{"tls:// without the hub's CA", "tls://" + h.client, "give --ca"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logBuf{}
			nc, err := bus.Connect(bus.ConnectConfig{URL: tc.url, Name: "plain", Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			eventually(t, 10*time.Second, func() error {
				if !strings.Contains(logs.String(), tc.want) {
					return fmt.Errorf("log lacks %q:\n%s", tc.want, logs)
				}
				return nil
			})
			if nc.IsConnected() {
				t.Fatal("a client that does not trust the hub connected")
			}
		})
	}
}

func TestServerConfigWebSocketIsTLSOnly(t *testing.T) {
	err := bus.ServerConfig{Name: "x", StoreDir: "x", WebSocket: "127.0.0.1:8443"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "TLS only") {
		t.Fatalf("a plaintext WebSocket port was accepted: %v", err)
	}
	err = bus.ServerConfig{Name: "x", StoreDir: "x", Listen: "0.0.0.0:4222"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "not loopback") {
		t.Fatalf("a plaintext client port off loopback was accepted: %v", err)
	}
}
