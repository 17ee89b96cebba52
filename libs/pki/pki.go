// Package pki is the hub's own small certificate authority: when an operator binds the hub
// off loopback without bringing certificates, `outpost up` creates a local CA and a server
// certificate in <data>/tls/, and a bridge trusts the hub with that ca.pem. Keys are ECDSA
// P-256; every validity decision goes through an injected clock.
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names inside Config.Dir.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
	CertFile  = "server.pem"
	KeyFile   = "server-key.pem"
)

// Config says where the CA lives and what the server certificate must name.
type Config struct {
	Dir string
	// Hosts are the DNS names and IP addresses the server certificate names (its SANs).
	Hosts []string
	// Now is the clock of every validity decision.
	Now func() time.Time
	// CAValidity and CertValidity are the lifetimes of newly made certificates; a server
	// certificate is made again when it expires within RenewBefore.
	CAValidity, CertValidity, RenewBefore time.Duration
}

// DefaultConfig: a CA for ten years, server certificates for a year, renewed 30 days ahead
// (on the next start of the hub).
func DefaultConfig(dir string, hosts []string) Config {
	return Config{Dir: dir, Hosts: hosts, Now: time.Now, CAValidity: 10 * 365 * 24 * time.Hour,
		CertValidity: 365 * 24 * time.Hour, RenewBefore: 30 * 24 * time.Hour}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("tls directory is empty"))
	}
	if len(c.Hosts) == 0 {
		errs = append(errs, errors.New("no host names or addresses for the server certificate: give --tls-san"))
	}
	for _, h := range c.Hosts {
		if h == "" || strings.ContainsAny(h, " /:") && net.ParseIP(h) == nil {
			errs = append(errs, fmt.Errorf("certificate name %q: want a DNS name or an IP address", h))
		}
	}
	if c.Now == nil {
		errs = append(errs, errors.New("no clock (Now)"))
	}
	if c.CAValidity <= 0 || c.CertValidity <= 0 || c.RenewBefore < 0 || c.RenewBefore >= c.CertValidity {
		errs = append(errs, fmt.Errorf("validity: CA %s, certificate %s, renew %s before expiry: want positive lifetimes longer than the renewal window",
			c.CAValidity, c.CertValidity, c.RenewBefore))
	}
	return errors.Join(errs...)
}

// Files are the paths Ensure made or kept, and what it did.
type Files struct {
	CA, CAKey, Cert, Key string
	// CreatedCA: a new CA was made (bridges need the new ca.pem). Issued: a new server
	// certificate was made (first start, changed names, or near expiry).
	CreatedCA, Issued bool
	// NotAfter is when the server certificate expires.
	NotAfter time.Time
}

// Ensure makes the CA on first use and keeps it; it reuses the server certificate while it
// is signed by that CA, names exactly cfg.Hosts and does not expire within RenewBefore, and
// issues a new one otherwise.
func Ensure(cfg Config) (Files, error) {
	if err := cfg.Validate(); err != nil {
		return Files{}, fmt.Errorf("tls config: %w", err)
	}
	f := Files{CA: filepath.Join(cfg.Dir, CAFile), CAKey: filepath.Join(cfg.Dir, CAKeyFile),
		Cert: filepath.Join(cfg.Dir, CertFile), Key: filepath.Join(cfg.Dir, KeyFile)}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return f, fmt.Errorf("tls directory: %w", err)
	}
	now := cfg.Now()
	ca, caKey, err := loadCA(f)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if ca, caKey, err = newCA(f, now, cfg.CAValidity); err != nil {
			return f, err
		}
		f.CreatedCA = true
	case err != nil:
		return f, err
	case now.After(ca.NotAfter):
		return f, fmt.Errorf("the hub's CA %s expired on %s: move %s away to make a new CA on the next start, then give bridges the new ca.pem",
			f.CA, ca.NotAfter.Format(time.DateOnly), cfg.Dir)
	}
	if cert, ok := reusable(f, ca, now, cfg); ok {
		f.NotAfter = cert.NotAfter
		return f, nil
	}
	notAfter, err := issue(f, ca, caKey, now, cfg)
	if err != nil {
		return f, err
	}
	f.Issued, f.NotAfter = true, notAfter
	return f, nil
}

func loadCA(f Files) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, nil, err
	}
	ca, err := parseCert(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", f.CA, err)
	}
	key, err := loadKey(f.CAKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s exists but its key %s does not: restore the key, or move both away to make a new CA", f.CA, f.CAKey)
	}
	if err != nil {
		return nil, nil, err
	}
	if !ca.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		return nil, nil, fmt.Errorf("%s does not belong to %s: restore the matching pair, or move both away to make a new CA", f.CAKey, f.CA)
	}
	return ca, key, nil
}

// loadKey reads a PEM EC key and refuses one that others may read.
func loadKey(path string) (*ecdsa.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: a private key must be readable by its owner only (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	k, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func newCA(f Files, now time.Time, validity time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "Outpost hub CA " + host, Organization: []string{"Outpost"}},
		// An hour back: a bridge whose clock is a little behind still accepts it.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create the CA: %w", err)
	}
	// The key first: a ca.pem without its key would be a CA nobody can use.
	if err := writeKey(f.CAKey, key); err != nil {
		return nil, nil, err
	}
	if err := writeAtomic(f.CA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	return ca, key, err
}

// reusable says whether the server certificate on disk can serve another start.
func reusable(f Files, ca *x509.Certificate, now time.Time, cfg Config) (*x509.Certificate, bool) {
	b, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, false
	}
	cert, err := parseCert(b)
	if err != nil {
		return nil, false
	}
	if _, err := loadKey(f.Key); err != nil {
		return nil, false
	}
	if _, err := tls.LoadX509KeyPair(f.Cert, f.Key); err != nil {
		return nil, false
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, false
	}
	if cert.NotAfter.Sub(now) <= cfg.RenewBefore {
		return nil, false
	}
	return cert, slices.Equal(certNames(cert), normalize(cfg.Hosts))
}

func issue(f Files, ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time, cfg Config) (time.Time, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return time.Time{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "outpost hub", Organization: []string{"Outpost"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(cfg.CertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	for _, h := range normalize(cfg.Hosts) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return time.Time{}, fmt.Errorf("issue the server certificate: %w", err)
	}
	if err := writeKey(f.Key, key); err != nil {
		return time.Time{}, err
	}
	if err := writeAtomic(f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return time.Time{}, err
	}
	return tmpl.NotAfter, nil
}

// certNames are a certificate's SANs in the form normalize gives.
func certNames(c *x509.Certificate) []string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return normalize(names)
}

// normalize lower-cases names, writes IPs canonically, sorts and drops duplicates.
func normalize(hosts []string) []string {
	var out []string
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			out = append(out, ip.String())
		} else {
			out = append(out, strings.ToLower(strings.TrimSuffix(h, ".")))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func writeKey(path string, k *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// writeAtomic replaces path in one step, so a crash never leaves half a PEM behind.
func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SANs are the names a server certificate needs for listeners bound to binds (host:port):
// the bound host itself, or for an unspecified address (0.0.0.0, ::, empty) loopback,
// localhost and every address of the host's interfaces; then the host name and extra.
func SANs(binds, extra []string) ([]string, error) {
	host, _ := os.Hostname()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list the host's addresses: %w", err)
	}
	return sansFrom(binds, extra, host, addrs), nil
}

func sansFrom(binds, extra []string, hostname string, ifaces []net.Addr) []string {
	var out []string
	for _, b := range binds {
		h, _, err := net.SplitHostPort(b)
		if err != nil {
			h = b
		}
		ip := net.ParseIP(h)
		if h != "" && (ip == nil || !ip.IsUnspecified()) {
			out = append(out, h)
			continue
		}
		out = append(out, "127.0.0.1", "::1", "localhost")
		for _, a := range ifaces {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
				out = append(out, n.IP.String())
			}
		}
	}
	if hostname != "" {
		out = append(out, hostname)
	}
	out = append(out, extra...)
	return normalize(out)
}

// ServerTLS loads a certificate for a listener; with clientCA, clients must present a
// certificate that CA signed (mTLS).
func ServerTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s / key %s: %w", certFile, keyFile, err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if clientCA != "" {
		b, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("tls client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("tls client CA %s: no PEM certificate found", clientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// CAPool reads a PEM bundle into a pool (for clients that trust the hub).
func CAPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bytes.TrimSpace(b)) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}
