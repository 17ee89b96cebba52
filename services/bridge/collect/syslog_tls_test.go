package collect

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key as PEM files and returns their
// paths and a pool trusting it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "syslog.site"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// Syslog over TLS (RFC 5425): octet-counting frames over a verified TLS connection become
// events, an oversize frame is rejected while the stream goes on, and a sender speaking
// plain TCP to the TLS port is counted and kept with the handshake's reason.
func TestSyslogOverTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	c, sink := start(t, Config{SyslogTLS: "127.0.0.1:0", SyslogTLSCert: certFile, SyslogTLSKey: keyFile, MaxMessage: 512})
	addr := c.Addrs["syslog/tls"].String()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	frame := func(msg string) string { return fmt.Sprintf("%d %s", len(msg), msg) }
	msgs := []string{
		"<11>1 2026-03-02T09:00:00Z web-1 nginx 42 - - upstream timed out",
		"<12>1 2026-03-02T09:00:01Z web-1 app - ID7 - disk almost full",
	}
	payload := frame(msgs[0]) + frame("<11>1 - web-1 big - - - "+strings.Repeat("x", 600)) + frame(msgs[1])
	if _, err := conn.Write([]byte(payload)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	evs := waitEvents(t, sink, 2)
	if evs[0].Node != "web-1" || evs[0].Type != "nginx" || evs[0].Severity != "major" || evs[1].Resource != "ID7" || evs[1].Severity != "warning" {
		t.Errorf("events %s", describe(evs))
	}
	_, rejects := sink.snapshot()
	if len(rejects) != 1 || !strings.Contains(rejects[0], "over 512") {
		t.Errorf("rejects %q, want the oversize frame", rejects)
	}

	// plain TCP to the TLS port: the handshake fails, is counted, and the listener goes on
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = raw.Write([]byte(frame(msgs[0])))
	eventually(t, 15*time.Second, func() error {
		if _, rj := sink.snapshot(); len(rj) != 2 || !strings.Contains(rj[1], "TLS handshake") {
			return fmt.Errorf("rejects %q, want a TLS handshake failure", rj)
		}
		return nil
	})
	raw.Close()
	if got := c.Counts()["syslog"]; got.Accepted != 2 || got.Rejected != 2 {
		t.Errorf("counts %+v", got)
	}
}

func TestSyslogTLSConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string // "" valid
	}{
		{Config{Syslog: "127.0.0.1:514", SyslogTLSCert: "c.pem", SyslogTLSKey: "k.pem"}, ""},
		{Config{SyslogTLS: "127.0.0.1:6514", SyslogTLSCert: "c.pem", SyslogTLSKey: "k.pem"}, ""},
		{Config{SyslogTLSCert: "c.pem", SyslogTLSKey: "k.pem"}, "needs an address"},
		{Config{Syslog: "127.0.0.1:514", SyslogTLSCert: "c.pem"}, "CERT,KEY"},
		{Config{SyslogTLS: "nope", SyslogTLSCert: "c.pem", SyslogTLSKey: "k.pem"}, "--collect-syslog-tls-addr"},
	} {
		err := tc.cfg.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if got := (Config{Syslog: "10.1.0.5:514"}).syslogTLSAddr(); got != "10.1.0.5:6514" {
		t.Errorf("default TLS address %q", got)
	}
	// unreadable files are an error at start, naming them
	if _, err := Start(t.Context(), Config{SyslogTLS: "127.0.0.1:0", SyslogTLSCert: "/nonexistent/c.pem", SyslogTLSKey: "/nonexistent/k.pem"}, &memSink{}); err == nil || !strings.Contains(err.Error(), "/nonexistent/c.pem") {
		t.Errorf("start with missing files: %v", err)
	}
}
