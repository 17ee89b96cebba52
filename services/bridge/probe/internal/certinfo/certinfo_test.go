package certinfo

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf8"
)

func selfSigned(t testing.TB, notAfter time.Time) []byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0x1234abcd), Subject: pkix.Name{CommonName: "www.example.test", Organization: []string{"Example"}},
		NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter, DNSNames: []string{"www.example.test", "example.test"},
		IPAddresses: []net.IP{net.ParseIP("10.1.2.3")}, EmailAddresses: []string{"ops@example.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSummarize(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	c, err := Summarize(selfSigned(t, now.Add(10*24*time.Hour+time.Hour)), now)
	if err != nil {
		t.Fatal(err)
	}
	if c.SubjectCN != "www.example.test" || c.Issuer != c.Subject || !c.SelfSigned || c.IsCA {
		t.Errorf("names: %+v", c)
	}
	if c.DaysLeft != 10 || c.Expired || c.NotYetValid {
		t.Errorf("validity: days %d expired %v", c.DaysLeft, c.Expired)
	}
	if c.KeyAlgorithm != "ECDSA P-256" || c.Serial != "1234abcd" || len(c.SHA256) != 64 || len(c.SHA1) != 40 {
		t.Errorf("key/serial/fingerprints: %+v", c)
	}
	if len(c.IPs) != 1 || c.IPs[0] != "10.1.2.3" || len(c.Emails) != 1 {
		t.Errorf("SANs: %+v", c)
	}
	old, _ := Summarize(selfSigned(t, now.Add(-36*time.Hour)), now)
	if !old.Expired || old.DaysLeft != -2 {
		t.Errorf("expired: %v days %d", old.Expired, old.DaysLeft)
	}
	if _, err := Summarize([]byte("not a certificate"), now); err == nil {
		t.Error("garbage summarised")
	}
}

// TestWriteCorpus refreshes the committed seed corpus of FuzzSummarize
// (OUTPOST_WRITE_CORPUS=1 go test -run TestWriteCorpus ./...).
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("OUTPOST_WRITE_CORPUS") != "1" {
		t.Skip("set OUTPOST_WRITE_CORPUS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzSummarize")
	os.MkdirAll(dir, 0o755)
	now := time.Now()
	for i, der := range [][]byte{selfSigned(t, now.Add(400*24*time.Hour)), selfSigned(t, now.Add(-24*time.Hour))} {
		writeSeed(t, filepath.Join(dir, []string{"valid", "expired"}[i]), der)
		writeSeed(t, filepath.Join(dir, []string{"valid", "expired"}[i]+"-cut"), der[:len(der)/2])
	}
}

func writeSeed(t *testing.T, path string, b []byte) {
	s := "go test fuzz v1\n[]byte(\""
	for _, c := range b {
		s += "\\x" + "0123456789abcdef"[c>>4:c>>4+1] + "0123456789abcdef"[c&15:c&15+1]
	}
	if err := os.WriteFile(path, []byte(s+"\")\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FuzzSummarize: whatever DER a target presents, summarising never panics and yields
// bounded, valid UTF-8 names.
func FuzzSummarize(f *testing.F) {
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	now := time.Now()
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := Summarize(der, now)
		if err != nil {
			return
		}
		for _, s := range append([]string{c.Subject, c.SubjectCN, c.Issuer, c.IssuerCN, c.Serial}, append(c.DNSNames, c.Emails...)...) {
			if !utf8.ValidString(s) || len(s) > maxNameLen+len("…") {
				t.Fatalf("bad name %q", s)
			}
		}
		if len(c.DNSNames) > maxNames || len(c.IPs) > maxNames || len(c.SHA256) != 64 {
			t.Fatalf("unbounded summary: %+v", c)
		}
	})
}
