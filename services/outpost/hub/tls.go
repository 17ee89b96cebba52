package hub

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/pki"
)

// TLSDir is where the hub keeps the CA and server certificate it makes for itself:
// <data>/tls/ca.pem is what a bridge needs to trust the hub (--ca).
const TLSDir = "tls"

// hubTLS is what the listeners of one start serve.
type hubTLS struct {
	// nats and wss are nil when the port is plaintext (loopback, no --tls-cert; wss never is).
	nats, wss *tls.Config
	// certFile/keyFile serve the gateway when it is off loopback (empty: plain HTTP).
	certFile, keyFile string
	// caFile is what to give a bridge as --ca ("" when --tls-cert came from elsewhere).
	caFile string
}

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

// tlsWanted says whether this start serves TLS at all: off loopback, with a WebSocket port,
// or when the operator brought a certificate.
func (c Config) tlsWanted() bool {
	return c.TLSCert != "" || c.WSSAddr != "" || !bus.IsLoopback(hostOf(c.NATSAddr)) || !bus.IsLoopback(hostOf(c.HTTPAddr))
}

// setupTLS uses --tls-cert/--tls-key when given; otherwise it makes (first start) or reuses
// the hub's own CA and a server certificate naming every address the hub listens on.
func setupTLS(cfg Config, log *slog.Logger) (hubTLS, error) {
	var t hubTLS
	if !cfg.tlsWanted() {
		return t, nil
	}
	t.certFile, t.keyFile = cfg.TLSCert, cfg.TLSKey
	if cfg.TLSCert == "" {
		binds := []string{cfg.NATSAddr, cfg.HTTPAddr}
		if cfg.WSSAddr != "" {
			binds = append(binds, cfg.WSSAddr)
		}
		sans, err := pki.SANs(binds, cfg.TLSSANs)
		if err != nil {
			return t, err
		}
		pc := pki.DefaultConfig(filepath.Join(cfg.DataDir, TLSDir), sans)
		if cfg.Now != nil {
			pc.Now = cfg.Now
		}
		f, err := pki.Ensure(pc)
		if err != nil {
			return t, fmt.Errorf("the hub's TLS certificate: %w", err)
		}
		switch {
		case f.CreatedCA:
			log.Info("created the hub's CA: bridges trust the hub with it (--ca)", "ca", f.CA)
		case f.Issued:
			log.Info("issued a new server certificate (names changed or it was due)", "cert", f.Cert)
		}
		log.Info("hub TLS certificate", "names", sans, "expires", f.NotAfter.Format("2006-01-02"))
		t.certFile, t.keyFile, t.caFile = f.Cert, f.Key, f.CA
	}
	tc, err := pki.ServerTLS(t.certFile, t.keyFile, cfg.TLSClientCA)
	if err != nil {
		return t, err
	}
	t.wss = tc
	// Loopback stays plaintext for local tools and bridges unless the operator brought a
	// certificate; off loopback it is TLS or nothing.
	if cfg.TLSCert != "" || !bus.IsLoopback(hostOf(cfg.NATSAddr)) {
		t.nats = tc
	}
	if cfg.TLSCert == "" && bus.IsLoopback(hostOf(cfg.HTTPAddr)) {
		t.certFile, t.keyFile = "", ""
	}
	return t, nil
}

// printBridgeHowTo tells the operator the command line a bridge on another host runs. It
// never contains a real token: `outpost site add` prints one.
func printBridgeHowTo(out io.Writer, cfg Config, t hubTLS, natsAddr net.Addr) {
	ca := ""
	switch {
	case t.caFile != "":
		ca = " --ca " + t.caFile
	case cfg.TLSCert != "":
		ca = " --ca CA.pem" // the CA that signed --tls-cert; omit when publicly trusted
	}
	var lines []string
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	if natsAddr != nil {
		scheme, host := "nats", dialHost(cfg.NATSAddr)
		if t.nats != nil {
			scheme = "tls"
		}
		lines = append(lines, fmt.Sprintf("outpost-bridge --hub %s://%s%s", scheme, net.JoinHostPort(host, port(natsAddr.String())), ca))
	}
	if cfg.WSSAddr != "" {
		lines = append(lines, fmt.Sprintf("outpost-bridge --hub wss://%s%s [--proxy http://PROXY:PORT]", net.JoinHostPort(dialHost(cfg.WSSAddr), port(cfg.WSSAddr)), ca))
	}
	fmt.Fprintln(out, "Bridges connect with (a token comes from `outpost site add SITE`):")
	for _, l := range lines {
		fmt.Fprintf(out, "  %s --site SITE --name NAME --token \"$TOKEN\"\n", l)
	}
}

// dialHost is the host a bridge dials for a listen address: the bound one, or for an
// address on every interface the host name, which the certificate names.
func dialHost(addr string) string {
	h := hostOf(addr)
	if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
		return h
	}
	if name, err := os.Hostname(); err == nil && name != "" && !strings.ContainsAny(name, " /") {
		return name
	}
	return "127.0.0.1"
}
