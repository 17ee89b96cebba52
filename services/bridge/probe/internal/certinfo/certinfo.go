// Package certinfo summarises X.509 certificates as a target presents them: who they
// name, who issued them, how long they stay valid, and their fingerprints.
package certinfo

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outpost-dev/outpost/libs/probes"
)

// Cert is the summary of one certificate (the wire type is the contract's).
type Cert = probes.Certificate

// limits keep a hostile certificate from bloating a result
const (
	maxNames   = 100
	maxNameLen = 256
)

// Summarize parses a DER certificate and summarises it relative to now.
func Summarize(der []byte, now time.Time) (Cert, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return Cert{}, fmt.Errorf("certificate does not parse: %w", err)
	}
	return Of(c, now), nil
}

// Of summarises a parsed certificate.
func Of(c *x509.Certificate, now time.Time) Cert {
	s256 := sha256.Sum256(c.Raw)
	s1 := sha1.Sum(c.Raw)
	out := Cert{
		Subject: clean(c.Subject.String()), SubjectCN: clean(c.Subject.CommonName),
		Issuer: clean(c.Issuer.String()), IssuerCN: clean(c.Issuer.CommonName),
		DNSNames: cleanAll(c.DNSNames), IPs: []string{}, Emails: cleanAll(c.EmailAddresses),
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
		IsCA: c.IsCA, KeyAlgorithm: keyAlgorithm(c), SignatureAlgorithm: c.SignatureAlgorithm.String(),
		SHA256: hex.EncodeToString(s256[:]), SHA1: hex.EncodeToString(s1[:]),
	}
	if c.SerialNumber != nil {
		out.Serial = clean(strings.ToLower(c.SerialNumber.Text(16)))
	}
	for i, ip := range c.IPAddresses {
		if i == maxNames {
			break
		}
		out.IPs = append(out.IPs, ip.String())
	}
	for i, u := range c.URIs {
		if i == maxNames {
			break
		}
		out.URIs = append(out.URIs, clean(u.String()))
	}
	out.DaysLeft = DaysLeft(c.NotAfter, now)
	out.Expired = now.After(c.NotAfter)
	out.NotYetValid = now.Before(c.NotBefore)
	out.SelfSigned = string(c.RawSubject) == string(c.RawIssuer) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
	return out
}

// DaysLeft is the number of whole days until notAfter (negative once expired).
func DaysLeft(notAfter, now time.Time) int {
	d := notAfter.Sub(now).Hours() / 24
	if d > math.MaxInt32 {
		return math.MaxInt32
	}
	if d < math.MinInt32 {
		return math.MinInt32
	}
	return int(math.Floor(d))
}

func keyAlgorithm(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		if k.Curve != nil {
			return "ECDSA " + k.Curve.Params().Name
		}
		return "ECDSA"
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return c.PublicKeyAlgorithm.String()
}

func clean(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) > maxNameLen {
		s = strings.ToValidUTF8(s[:maxNameLen], "") + "…"
	}
	return s
}

func cleanAll(in []string) []string {
	out := []string{}
	for i, s := range in {
		if i == maxNames {
			break
		}
		out = append(out, clean(s))
	}
	return out
}

// TLS describes a finished handshake (the wire type is the contract's).
type TLS = probes.TLS

// State summarises a connection state; host is what the chain is verified for.
func State(cs tls.ConnectionState, host string, roots *x509.CertPool, now time.Time, withChain bool) TLS {
	t := TLS{Version: tls.VersionName(cs.Version), CipherSuite: tls.CipherSuiteName(cs.CipherSuite), ALPN: cs.NegotiatedProtocol, ServerName: cs.ServerName}
	if len(cs.PeerCertificates) == 0 {
		t.VerifyError = "no certificate"
		return t
	}
	leaf := Of(cs.PeerCertificates[0], now)
	t.Certificate = &leaf
	if withChain {
		for i, c := range cs.PeerCertificates {
			if i == 10 {
				break
			}
			t.Chain = append(t.Chain, Of(c, now))
		}
	}
	if err := Verify(cs.PeerCertificates, host, roots, now); err != nil {
		t.VerifyError = err.Error()
	} else {
		t.Verified = true
	}
	return t
}

// Verify checks a presented chain for host against roots (nil: the system's).
func Verify(chain []*x509.Certificate, host string, roots *x509.CertPool, now time.Time) error {
	if len(chain) == 0 {
		return fmt.Errorf("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter, CurrentTime: now})
	return err
}
