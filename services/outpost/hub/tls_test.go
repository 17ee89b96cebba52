package hub_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/services/outpost/hub"
)

// A hub bound off loopback serves TLS with a CA it makes in <data>/tls/: a client that trusts
// ca.pem connects over tls:// and wss://, a plaintext client is refused, the start prints the
// bridge's command line, and a restart keeps the CA and the certificate.
func TestUpOffLoopbackServesTLS(t *testing.T) {
	dir := t.TempDir()
	_, natsPort, _ := net.SplitHostPort(freeAddr(t))
	wss := freeAddr(t)
	opt := func(c *hub.Config) {
		c.NATSAddr, c.WSSAddr, c.TLSSANs, c.NoLocalBridge = "0.0.0.0:"+natsPort, wss, []string{"hub.test"}, true
	}
	r := startWith(t, dir, opt)
	ca := filepath.Join(dir, hub.TLSDir, "ca.pem")
	for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca-key.pem": 0o600, "server.pem": 0o644, "server-key.pem": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, hub.TLSDir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: %v (mode %v, want %04o)", name, err, fi, mode)
		}
	}
	out := r.out.String()
	if !strings.Contains(out, "outpost-bridge --hub tls://") || !strings.Contains(out, ":"+natsPort+" --ca "+ca) ||
		!strings.Contains(out, "--hub wss://") || !strings.Contains(out, `--token "$TOKEN"`) {
		t.Fatalf("the start does not say how a bridge connects:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "outpost-bridge") && strings.Contains(line, r.token(t)) {
			t.Fatalf("a real token in the bridge command line: %s", line)
		}
	}
	auth, err := hub.ServiceAuth(dir)
	if err != nil {
		t.Fatal(err)
	}
	natsAddr := "127.0.0.1:" + natsPort
	cases := []struct {
		name string
		url  string
		opts []nats.Option
		ok   bool
	}{
		{"tls:// with ca.pem", "tls://" + natsAddr, []nats.Option{nats.RootCAs(ca)}, true},
		{"wss:// with ca.pem", "wss://" + wss, []nats.Option{nats.RootCAs(ca)}, true},
		{"tls:// by a name given with --tls-san", "tls://" + natsAddr, []nats.Option{nats.RootCAs(ca), nats.Secure(&tls.Config{ServerName: "hub.test"})}, true},
		{"tls:// without the CA", "tls://" + natsAddr, nil, false},
		{"nats:// without the CA", "nats://" + natsAddr, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(tc.url, append([]nats.Option{auth, nats.MaxReconnects(0), nats.Timeout(5 * time.Second)}, tc.opts...)...)
			if err == nil {
				defer nc.Close()
				_, err = nc.Request("$JS.API.INFO", nil, 5*time.Second)
			}
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	// Plaintext on the wire, as a client that does not speak TLS at all: refused.
	if refusedPlaintext(t, natsAddr) == "" {
		t.Fatal("the server answered a plaintext client")
	}
	caPEM, _ := os.ReadFile(ca)
	certPEM, _ := os.ReadFile(filepath.Join(dir, hub.TLSDir, "server.pem"))
	r.stop(t)

	r2 := startWith(t, dir, opt)
	defer r2.stop(t)
	caPEM2, _ := os.ReadFile(ca)
	certPEM2, _ := os.ReadFile(filepath.Join(dir, hub.TLSDir, "server.pem"))
	if !bytes.Equal(caPEM, caPEM2) || !bytes.Equal(certPEM, certPEM2) {
		t.Fatal("a restart with the same addresses changed the CA or the certificate")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", wss, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("wss port after restart: %v", err)
	}
	conn.Close()
}

// refusedPlaintext speaks NATS in plaintext to addr and returns what refused it ("" when the
// server answered the PING).
func refusedPlaintext(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	info, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, `"tls_required":true`) {
		t.Fatalf("INFO does not require TLS: %s", info)
	}
	_, _ = c.Write([]byte("CONNECT {\"verbose\":false,\"tls_required\":false}\r\nPING\r\n"))
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "closed: " + err.Error()
		}
		if strings.HasPrefix(line, "PONG") {
			return ""
		}
		if strings.HasPrefix(line, "-ERR") {
			return line
		}
	}
}

func TestUpRefusesBadTLSConfig(t *testing.T) {
	cases := []struct {
		name string
		opt  func(*hub.Config)
		want string
	}{
		{"cert without key", func(c *hub.Config) { c.TLSCert = "cert.pem" }, "--tls-cert and --tls-key go together"},
		{"missing files", func(c *hub.Config) { c.TLSCert, c.TLSKey = "/nonexistent/c.pem", "/nonexistent/k.pem" }, "--tls-key: stat"},
		{"client CA without TLS", func(c *hub.Config) { c.TLSClientCA = os.Args[0] }, "--tls-client-ca needs TLS"},
		{"bad --wss", func(c *hub.Config) { c.WSSAddr = "443" }, "--wss"},
		{"bad --tls-san", func(c *hub.Config) { c.TLSSANs = []string{"a b"} }, "--tls-san"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := hub.DefaultConfig()
			cfg.DataDir = t.TempDir()
			tc.opt(&cfg)
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}
