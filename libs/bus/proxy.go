package bus

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// ParseProxy checks an HTTP CONNECT proxy URL: http://[user:password@]host[:port].
func ParseProxy(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("proxy URL: %w", redactErr(err, raw))
	}
	var errs []error
	if u.Scheme != "http" {
		errs = append(errs, fmt.Errorf("proxy URL %s: scheme %q, want http:// (an HTTP CONNECT proxy; the hub connection inside it is still TLS)", redactURL(raw), u.Scheme))
	}
	if u.Hostname() == "" {
		errs = append(errs, fmt.Errorf("proxy URL %s: no host, want http://proxy.example:3128", redactURL(raw)))
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		errs = append(errs, fmt.Errorf("proxy URL %s: a proxy URL has no path or query", redactURL(raw)))
	}
	return u, errors.Join(errs...)
}

// redactErr keeps a parse error from repeating a URL with its password in it.
func redactErr(err error, raw string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", redactURL(raw), ue.Err)
	}
	return err
}

// proxyDialer tunnels hub connections through an HTTP CONNECT proxy: nats.go then speaks TLS
// or WebSocket over the tunnel exactly as if it had dialled the hub itself, so the hub's
// certificate is still verified end to end and the proxy sees only ciphertext.
type proxyDialer struct {
	// proxyFor returns the proxy for a hub address, or nil to dial it directly.
	proxyFor func(addr string) (*url.URL, error)
	timeout  time.Duration
}

func newProxyDialer(cfg ConnectConfig) (*proxyDialer, error) {
	d := &proxyDialer{timeout: 10 * time.Second}
	if cfg.Proxy != "" {
		p, err := ParseProxy(cfg.Proxy)
		if err != nil {
			return nil, err
		}
		d.proxyFor = func(string) (*url.URL, error) { return p, nil }
		return d, nil
	}
	// HTTPS_PROXY for hub URLs that are TLS anyway (the usual case), HTTP_PROXY for
	// plaintext ones; NO_PROXY exempts hosts, and loopback is never proxied.
	scheme := "https"
	for _, raw := range splitURLs(cfg.URL) {
		if u, err := url.Parse(raw); err == nil && (u.Scheme == "nats" || u.Scheme == "ws") {
			scheme = "http"
		}
	}
	env := httpproxy.FromEnvironment()
	pf := env.ProxyFunc()
	d.proxyFor = func(addr string) (*url.URL, error) {
		p, err := pf(&url.URL{Scheme: scheme, Host: addr})
		if err != nil || p == nil {
			return p, err
		}
		if _, err := ParseProxy(p.String()); err != nil {
			return nil, fmt.Errorf("proxy from the environment (HTTPS_PROXY): %w", err)
		}
		return p, nil
	}
	return d, nil
}

// Dial implements nats.CustomDialer.
func (d *proxyDialer) Dial(network, addr string) (net.Conn, error) {
	p, err := d.proxyFor(addr)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return net.DialTimeout(network, addr, d.timeout)
	}
	return dialConnect(p, addr, d.timeout)
}

// dialConnect opens a tunnel to addr through the proxy p with CONNECT.
func dialConnect(p *url.URL, addr string, timeout time.Duration) (net.Conn, error) {
	paddr := p.Host
	if p.Port() == "" {
		paddr = net.JoinHostPort(p.Hostname(), "80")
	}
	shown := redactURL(p.String())
	c, err := net.DialTimeout("tcp", paddr, timeout)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w (check --proxy / HTTPS_PROXY)", shown, err)
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	var req strings.Builder
	fmt.Fprintf(&req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", addr, addr)
	if p.User != nil {
		pw, _ := p.User.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(p.User.Username() + ":" + pw))
		fmt.Fprintf(&req, "Proxy-Authorization: Basic %s\r\n", cred)
	}
	req.WriteString("\r\n")
	if _, err := c.Write([]byte(req.String())); err != nil {
		c.Close()
		return nil, fmt.Errorf("proxy %s: send CONNECT %s: %w", shown, addr, err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("proxy %s: no answer to CONNECT %s: %w", shown, addr, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		hint := "the proxy must allow CONNECT to the hub's port"
		switch {
		case resp.StatusCode == http.StatusProxyAuthRequired && p.User == nil:
			hint = "the proxy wants a user: give it in the proxy URL, http://USER:PASSWORD@host:port"
		case resp.StatusCode == http.StatusProxyAuthRequired:
			hint = "the proxy refused the user and password of the proxy URL"
		}
		return nil, fmt.Errorf("proxy %s refused CONNECT %s: %s: %s", shown, addr, resp.Status, hint)
	}
	_ = c.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		// The hub speaks first (NATS INFO): its first bytes may have come with the 200.
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// bufferedConn returns what the CONNECT reader read ahead before reading the socket again.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }
