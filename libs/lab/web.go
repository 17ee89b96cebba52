package lab

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// webSite is what one HTTP(S) port of a host serves.
type webSite struct {
	port   int
	tls    bool
	server string
	status int
	title  string
	iis    bool
	winrm  bool
}

// tlsIdentity is a host's certificate, used on every TLS port it has.
type tlsIdentity struct {
	cert tls.Certificate
}

// planTLS creates the certificate of every host with a TLS port. Keys and
// signatures are deterministic (see deterministicSigner), so the same seed
// and reference day give the same certificates and fingerprints.
func (p *plan) planTLS() error {
	var tlsHosts []*host
	for _, h := range p.hosts {
		for _, s := range h.services {
			if s.kind == svcHTTPS || s.kind == svcLDAPS {
				tlsHosts = append(tlsHosts, h)
				break
			}
		}
	}
	// make sure the lab shows every certificate state once it has a few TLS hosts
	states := make([]string, len(tlsHosts))
	r := rng(p.cfg.Seed, "cert-states", 0)
	for i := range states {
		switch n := r.IntN(100); {
		case n < 70:
			states[i] = "valid"
		case n < 85:
			states[i] = "expiring"
		default:
			states[i] = "expired"
		}
	}
	if len(tlsHosts) >= 4 {
		for _, want := range []string{"expiring", "expired"} {
			if !slices.Contains(states, want) {
				for i, h := range tlsHosts {
					if states[i] == "valid" && h.class != ClassLDAP && h.idx%2 == map[string]int{"expiring": 0, "expired": 1}[want] {
						states[i] = want
						break
					}
				}
				if !slices.Contains(states, want) {
					for i, h := range tlsHosts {
						if states[i] == "valid" && h.class != ClassLDAP {
							states[i] = want
							break
						}
					}
				}
			}
		}
	}
	// certificates are independent: make them on every CPU
	errs := make([]error, len(tlsHosts))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(tlsHosts)) {
		wg.Go(func() {
			for i := range next {
				errs[i] = p.makeCertificate(tlsHosts[i], states[i])
			}
		})
	}
	for i := range tlsHosts {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

func (p *plan) makeCertificate(h *host, state string) error {
	site := sites[p.site]
	if h.class == ClassLDAP {
		state = "valid" // a directory with an expired certificate would be down
	}
	hr := rng(p.cfg.Seed, "cert", h.idx)
	var notAfter time.Time
	switch state {
	case "valid":
		notAfter = p.ref.Add(time.Duration(30+hr.IntN(690))*24*time.Hour + time.Duration(hr.IntN(86400))*time.Second)
	case "expiring":
		notAfter = p.ref.Add(time.Duration(1+hr.IntN(12))*24*time.Hour + time.Duration(hr.IntN(86400))*time.Second)
	case "expired":
		notAfter = p.ref.Add(-time.Duration(1+hr.IntN(120))*24*time.Hour + time.Duration(hr.IntN(86400))*time.Second)
	}
	notBefore := notAfter.Add(-time.Duration(pickOne(hr, []int{365, 397, 730, 90})) * 24 * time.Hour)
	subject := pkix.Name{
		CommonName:         h.fqdn,
		Organization:       []string{p.org},
		OrganizationalUnit: []string{"IT"},
		Locality:           []string{site.city},
		Country:            []string{site.country},
	}
	dns := []string{h.fqdn, strings.ToLower(h.name)}
	if h.class == ClassWeb && hr.IntN(2) == 0 {
		dns = append(dns, pickOne(hr, []string{"portal", "intranet", "www", "apps", "wiki"})+"."+p.domain)
	}
	serial := new(big.Int).SetUint64(hr.Uint64() >> 1)
	serial.Lsh(serial, 64).Or(serial, new(big.Int).SetUint64(hr.Uint64()))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           []net.IP{h.ip.AsSlice()},
	}
	key, err := deterministicKey(p.cfg.Seed, h.idx)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(zeroReader{}, tmpl, tmpl, &key.PublicKey, deterministicSigner{key})
	if err != nil {
		return fmt.Errorf("lab: certificate for %s: %w", h.ip, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("lab: certificate for %s: %w", h.ip, err)
	}
	h.tls = &tlsIdentity{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}
	sum := sha256.Sum256(der)
	var ports []int
	for _, s := range h.services {
		if s.kind == svcHTTPS || s.kind == svcLDAPS {
			ports = append(ports, s.port)
		}
	}
	slices.Sort(ports)
	h.m.Certificates = append(h.m.Certificates, Certificate{
		Ports: ports, SubjectCN: leaf.Subject.CommonName, Subject: leaf.Subject.String(), Issuer: leaf.Issuer.String(),
		DNSNames: leaf.DNSNames, IPs: []string{h.ip.String()},
		NotBefore: leaf.NotBefore.UTC(), NotAfter: leaf.NotAfter.UTC(), SHA256: hex.EncodeToString(sum[:]), State: state,
	})
	return nil
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// deterministicKey derives a P-256 key from the seed.
func deterministicKey(seed int64, idx int) (*ecdsa.PrivateKey, error) {
	for ctr := 0; ctr < 100; ctr++ {
		d := secretBytes(seed, fmt.Sprintf("tls-key-%d", ctr), idx)
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
		if err == nil {
			return k, nil
		}
	}
	return nil, errors.New("lab: cannot derive a P-256 key")
}

// deterministicSigner signs with ECDSA using a nonce derived from the key and
// the digest (in the spirit of RFC 6979), so that certificates — and hence
// their fingerprints in the manifest — are the same on every run. Go's own
// ECDSA signing is randomized and ignores the io.Reader since Go 1.26.
type deterministicSigner struct{ key *ecdsa.PrivateKey }

func (s deterministicSigner) Public() crypto.PublicKey { return &s.key.PublicKey }

func (s deterministicSigner) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	n := elliptic.P256().Params().N
	raw, err := s.key.Bytes()
	if err != nil {
		return nil, err
	}
	d := new(big.Int).SetBytes(raw)
	e := new(big.Int).SetBytes(digest)
	if len(digest) > 32 {
		e.SetBytes(digest[:32])
	}
	for ctr := byte(0); ; ctr++ {
		h := sha256.New()
		h.Write(raw)
		h.Write(digest)
		h.Write([]byte{ctr})
		k := new(big.Int).SetBytes(h.Sum(nil))
		k.Mod(k, n)
		if k.Sign() == 0 {
			continue
		}
		kb := k.FillBytes(make([]byte, 32))
		ek, err := ecdh.P256().NewPrivateKey(kb)
		if err != nil {
			continue
		}
		pub := ek.PublicKey().Bytes() // 0x04 || X || Y
		r := new(big.Int).SetBytes(pub[1:33])
		r.Mod(r, n)
		if r.Sign() == 0 {
			continue
		}
		sig := new(big.Int).Mul(r, d)
		sig.Add(sig, e)
		sig.Mul(sig, new(big.Int).ModInverse(k, n))
		sig.Mod(sig, n)
		if sig.Sign() == 0 {
			continue
		}
		return asn1.Marshal(struct{ R, S *big.Int }{r, sig})
	}
}

// webHandler serves every HTTP(S) port of the lab; it finds the host and
// port from the connection's local address.
type webHandler struct{ lab *Lab }

func (wh webHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	ap, err := netip.ParseAddrPort(la.String())
	if err != nil {
		http.Error(w, "no such site", http.StatusMisdirectedRequest)
		return
	}
	h := wh.lab.byIP[ap.Addr()]
	if h == nil || h.web[int(ap.Port())] == nil {
		http.Error(w, "no such site", http.StatusMisdirectedRequest)
		return
	}
	site := h.web[int(ap.Port())]
	hdr := w.Header()
	hdr.Set("Server", site.server)
	if site.winrm {
		// WinRM's HTTP.sys listener: 404 everywhere, 401 asking for Negotiate on /wsman
		if r.URL.Path == "/wsman" && r.Method == http.MethodPost {
			hdr.Add("WWW-Authenticate", "Negotiate")
			hdr.Add("WWW-Authenticate", "Kerberos")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		hdr.Set("Content-Type", "text/html; charset=us-ascii")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">`+"\r\n"+
			`<HTML><HEAD><TITLE>Not Found</TITLE>`+"\r\n"+`<META HTTP-EQUIV="Content-Type" Content="text/html; charset=us-ascii"></HEAD>`+"\r\n"+
			`<BODY><h2>Not Found</h2>`+"\r\n"+`<hr><p>HTTP Error 404. The requested resource is not found.</p>`+"\r\n"+`</BODY></HTML>`+"\r\n")
		return
	}
	if site.iis {
		hdr.Set("X-Powered-By", "ASP.NET")
	}
	if r.URL.Path == "/flaky" {
		wh.lab.serveFlaky(w, r)
		return
	}
	if wh.lab.serveFeed(w, r) {
		return
	}
	if r.URL.Path != "/" && r.URL.Path != "/index.html" {
		hdr.Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n<hr><center>%s</center>\r\n</body>\r\n</html>\r\n", html.EscapeString(site.server))
		return
	}
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Last-Modified", "Tue, 04 Jun 2024 09:12:44 GMT")
	w.WriteHeader(site.status)
	if r.Method == http.MethodHead {
		return
	}
	fmt.Fprintf(w, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>%s</title>\n</head>\n<body>\n<h1>%s</h1>\n<p>Served by %s on %s.</p>\n</body>\n</html>\n",
		html.EscapeString(site.title), html.EscapeString(site.title), html.EscapeString(h.fqdn), html.EscapeString(site.server))
}

// tlsConfig picks the certificate by the address the client connected to.
func (l *Lab) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			ap, err := netip.ParseAddrPort(hello.Conn.LocalAddr().String())
			if err != nil {
				return nil, err
			}
			if h := l.byIP[ap.Addr()]; h != nil && h.tls != nil {
				return &h.tls.cert, nil
			}
			return nil, errors.New("lab: no certificate for " + ap.Addr().String())
		},
	}
}

// serveFlaky is a target that is unavailable for a while, what a retry policy is tested
// against: /flaky?key=K&fail=N answers 503 Service Unavailable with Retry-After (seconds,
// ?retry_after=S, default 1) to the first N requests of key K, then 200. Requests are
// counted per key across every web server of the lab (FlakyHits reads the count), so a test
// picks its own key and sees exactly how many attempts reached the lab.
func (l *Lab) serveFlaky(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := q.Get("key")
	fail, err := strconv.Atoi(q.Get("fail"))
	retryAfter := q.Get("retry_after")
	if retryAfter == "" {
		retryAfter = "1"
	}
	ra, raErr := strconv.Atoi(retryAfter)
	if key == "" || err != nil || fail < 0 || raErr != nil || ra < 0 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "/flaky needs key=NAME, fail=N (failures before success, N >= 0) and optionally retry_after=SECONDS\n")
		return
	}
	l.flakyMu.Lock()
	if l.flaky == nil {
		l.flaky = map[string]int{}
	}
	l.flaky[key]++
	n := l.flaky[key]
	l.flakyMu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if n <= fail {
		w.Header().Set("Retry-After", strconv.Itoa(ra))
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "{\"key\":%q,\"attempt\":%d,\"status\":\"unavailable\"}\n", key, n)
		return
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	fmt.Fprintf(w, "{\"key\":%q,\"attempt\":%d,\"status\":\"ok\"}\n", key, n)
}

// FlakyHits reports how many requests /flaky answered for key (failed ones included).
func (l *Lab) FlakyHits(key string) int {
	l.flakyMu.Lock()
	defer l.flakyMu.Unlock()
	return l.flaky[key]
}
