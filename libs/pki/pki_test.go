package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// ref is the reference day of every validity decision here: the tests never read the clock.
var ref = time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)

func cfgAt(dir string, at time.Time, hosts ...string) Config {
	c := DefaultConfig(dir, hosts)
	c.Now = func() time.Time { return at }
	return c
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func serverCert(t *testing.T, f Files) *x509.Certificate {
	t.Helper()
	c, err := parseCert(read(t, f.Cert))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEnsureFirstStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	f, err := Ensure(cfgAt(dir, ref, "127.0.0.1", "hub.example", "::1"))
	if err != nil {
		t.Fatal(err)
	}
	if !f.CreatedCA || !f.Issued {
		t.Fatalf("first start: CreatedCA=%v Issued=%v", f.CreatedCA, f.Issued)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{f.CA, 0o644}, {f.CAKey, 0o600}, {f.Cert, 0o644}, {f.Key, 0o600}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != c.mode {
			t.Errorf("%s: mode %04o, want %04o", filepath.Base(c.path), fi.Mode().Perm(), c.mode)
		}
	}
	cert := serverCert(t, f)
	if got, want := certNames(cert), []string{"127.0.0.1", "::1", "hub.example"}; !slices.Equal(got, want) {
		t.Fatalf("SANs %v, want %v", got, want)
	}
	if !cert.NotAfter.Equal(ref.Add(365 * 24 * time.Hour)) {
		t.Fatalf("NotAfter %s", cert.NotAfter)
	}
	pool, err := CAPool(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: ref, DNSName: "hub.example"}); err != nil {
		t.Fatalf("server certificate does not verify against ca.pem: %v", err)
	}
}

// What a later start does with what the first one left.
func TestEnsureRestart(t *testing.T) {
	hosts := []string{"127.0.0.1", "hub.example"}
	cases := []struct {
		name      string
		at        time.Time
		hosts     []string
		wantIssue bool
	}{
		{"same names, far from expiry: reuse", ref.Add(24 * time.Hour), hosts, false},
		{"names in another order and case: reuse", ref.Add(24 * time.Hour), []string{"HUB.example", "127.0.0.1", "hub.example"}, false},
		{"a name added: reissue", ref.Add(24 * time.Hour), append(slices.Clone(hosts), "10.1.2.3"), true},
		{"a name removed: reissue", ref.Add(24 * time.Hour), hosts[:1], true},
		{"31 days before expiry: reuse", ref.Add(334 * 24 * time.Hour), hosts, false},
		{"29 days before expiry: reissue", ref.Add(336 * 24 * time.Hour), hosts, true},
		{"expired: reissue", ref.Add(400 * 24 * time.Hour), hosts, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			first, err := Ensure(cfgAt(dir, ref, hosts...))
			if err != nil {
				t.Fatal(err)
			}
			ca, certPEM := read(t, first.CA), read(t, first.Cert)
			f, err := Ensure(cfgAt(dir, tc.at, tc.hosts...))
			if err != nil {
				t.Fatal(err)
			}
			if f.CreatedCA || !bytes.Equal(read(t, f.CA), ca) {
				t.Fatal("the CA changed on restart: every bridge would lose trust")
			}
			if f.Issued != tc.wantIssue || bytes.Equal(read(t, f.Cert), certPEM) == tc.wantIssue {
				t.Fatalf("Issued=%v, want %v", f.Issued, tc.wantIssue)
			}
			cert := serverCert(t, f)
			if got := certNames(cert); !slices.Equal(got, normalize(tc.hosts)) {
				t.Fatalf("SANs %v, want %v", got, normalize(tc.hosts))
			}
			if cert.NotAfter.Sub(tc.at) <= 30*24*time.Hour {
				t.Fatalf("certificate expires %s, within 30 days of %s", cert.NotAfter, tc.at)
			}
		})
	}
}

func TestEnsureRefuses(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, f Files)
		at    time.Time
		want  string
	}{
		{"CA key readable by others", func(t *testing.T, f Files) { os.Chmod(f.CAKey, 0o644) }, ref, "chmod 600"},
		{"CA key missing", func(t *testing.T, f Files) { os.Remove(f.CAKey) }, ref, "restore the key"},
		{"CA key of another CA", func(t *testing.T, f Files) {
			other, err := Ensure(cfgAt(t.TempDir(), ref, "x"))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(f.CAKey, read(t, other.CAKey), 0o600)
		}, ref, "does not belong"},
		{"CA expired", func(*testing.T, Files) {}, ref.Add(11 * 365 * 24 * time.Hour), "expired"},
		{"garbage CA", func(t *testing.T, f Files) { os.WriteFile(f.CA, []byte("nope"), 0o644) }, ref, "no PEM"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f, err := Ensure(cfgAt(dir, ref, "localhost"))
			if err != nil {
				t.Fatal(err)
			}
			tc.setup(t, f)
			_, err = Ensure(cfgAt(dir, tc.at, "localhost"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// A server certificate on disk that this CA did not sign is replaced, not served.
func TestEnsureReplacesForeignCert(t *testing.T) {
	dir := t.TempDir()
	if _, err := Ensure(cfgAt(dir, ref, "localhost")); err != nil {
		t.Fatal(err)
	}
	other, err := Ensure(cfgAt(t.TempDir(), ref, "localhost"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, CertFile), read(t, other.Cert), 0o644)
	os.WriteFile(filepath.Join(dir, KeyFile), read(t, other.Key), 0o600)
	f, err := Ensure(cfgAt(dir, ref, "localhost"))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Issued {
		t.Fatal("a certificate of another CA was kept")
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{CertValidity: time.Hour, RenewBefore: 2 * time.Hour, Hosts: []string{"a b"}}
	err := c.Validate()
	for _, want := range []string{"directory is empty", `"a b"`, "no clock", "validity"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to say %q", err, want)
		}
	}
	if err := (Config{Dir: "x", Now: time.Now, CAValidity: 1, CertValidity: 1}).Validate(); err == nil || !strings.Contains(err.Error(), "--tls-san") {
		t.Errorf("no hosts: %v", err)
	}
}

func TestSANs(t *testing.T) {
	ifaces := []net.Addr{
		&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
		&net.IPNet{IP: net.ParseIP("192.0.2.10"), Mask: net.CIDRMask(24, 32)},
		&net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(64, 128)},
		&net.IPNet{IP: net.ParseIP("2001:db8::5"), Mask: net.CIDRMask(64, 128)},
	}
	cases := []struct {
		name   string
		binds  []string
		extra  []string
		expect []string
	}{
		{"one address", []string{"192.0.2.10:4222"}, nil, []string{"192.0.2.10", "hub1"}},
		{"a name and extras", []string{"hub.example:4222"}, []string{"nats.example", "198.51.100.7"}, []string{"198.51.100.7", "hub.example", "hub1", "nats.example"}},
		{"0.0.0.0: loopback and every interface but link-local", []string{"0.0.0.0:4222"}, nil,
			[]string{"127.0.0.1", "192.0.2.10", "2001:db8::5", "::1", "hub1", "localhost"}},
		{"[::] and a second listener", []string{"[::]:443", "127.0.0.1:4222"}, nil,
			[]string{"127.0.0.1", "192.0.2.10", "2001:db8::5", "::1", "hub1", "localhost"}},
		{"empty host is every address", []string{":4222"}, nil, []string{"127.0.0.1", "192.0.2.10", "2001:db8::5", "::1", "hub1", "localhost"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := sansFrom(tc.binds, tc.extra, "hub1", ifaces); !slices.Equal(got, normalize(tc.expect)) {
				t.Fatalf("got %v, want %v", got, normalize(tc.expect))
			}
		})
	}
	// The real host: an unspecified bind names loopback at least.
	got, err := SANs([]string{"0.0.0.0:1"}, nil)
	if err != nil || !slices.Contains(got, "127.0.0.1") || !slices.Contains(got, "localhost") {
		t.Fatalf("SANs = %v, %v", got, err)
	}
}

// A real TLS handshake on loopback: the CA verifies the server, and with a client CA the
// server refuses a client without a certificate. Validity is relative to the real clock
// here because crypto/tls verifies against it.
func TestServerTLSHandshake(t *testing.T) {
	dir := t.TempDir()
	f, err := Ensure(DefaultConfig(dir, []string{"127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := CAPool(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	// A second CA plays the client CA of the mTLS case.
	clientDir := t.TempDir()
	cf, err := Ensure(DefaultConfig(clientDir, []string{"bridge1"}))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		clientCA string
		client   *tls.Config
		ok       bool
	}{
		{"verified by ca.pem", "", &tls.Config{RootCAs: pool}, true},
		{"unknown CA refused", "", &tls.Config{}, false},
		{"mTLS without a client certificate refused", cf.CA, &tls.Config{RootCAs: pool}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := ServerTLS(f.Cert, f.Key, tc.clientCA)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := tls.Listen("tcp", "127.0.0.1:0", sc)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				if c.(*tls.Conn).Handshake() == nil {
					c.Write([]byte("hello"))
				}
			}()
			tc.client.ServerName = "127.0.0.1"
			conn, err := tls.Dial("tcp", ln.Addr().String(), tc.client)
			if err == nil {
				var b []byte
				b, err = io.ReadAll(conn)
				conn.Close()
				if err == nil && string(b) != "hello" {
					err = io.ErrUnexpectedEOF
				}
			}
			if (err == nil) != tc.ok {
				t.Fatalf("handshake err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
