package probetest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/services/bridge/probe/probetest"
)

// This package's lab lives on 127.77.160.0/24 (127.77.160.0-127.77.175.255 is reserved
// for the probe kinds' tests); PostgreSQL and the HTTP test servers on 127.0.0.1.
const labRange = "127.77.160.0/24"

// env is what the cases point at.
var env struct {
	lab      *lab.Lab
	m        lab.Manifest
	pg       *probetest.Postgres // nil when OUTPOST_SKIP_PG=1
	web      *httptest.Server    // basic auth and a large body
	webTLS   *httptest.Server    // the same over TLS with a certificate the cases trust
	webCA    string              // PEM of webTLS's certificate
	sshKey   string              // PEM of a key the lab's linux hosts accept
	setupErr error
}

var labPrefix = netip.MustParsePrefix(labRange)

// allowed is the site's allow-list: the lab and the local servers.
func allowed(a netip.Addr) bool {
	return labPrefix.Contains(a) || a == netip.MustParseAddr("127.0.0.1")
}

func TestMain(m *testing.M) {
	code := run(m)
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "goroutines left behind: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sshPub, _ := ssh.NewPublicKey(pub)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	env.sshKey = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))

	l, err := lab.Start(ctx, lab.Config{Range: labRange, Hosts: 40, Seed: 7, Hostile: true, AuthorizedKeys: []ssh.PublicKey{sshPub}})
	if errors.Is(err, syscall.EACCES) {
		fmt.Fprintf(os.Stderr, "the lab binds well-known ports: run as root or with CAP_NET_BIND_SERVICE: %v\n", err)
		return 1
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lab: %v\n", err)
		return 1
	}
	defer l.Close()
	env.lab, env.m = l, l.Manifest()

	if !probetest.SkipPG() {
		pg, err := probetest.StartPostgres(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "PostgreSQL for sql_query: %v\n(set %s=1 to skip the PostgreSQL cases)\n", err, probetest.EnvSkipPG)
			return 1
		}
		defer pg.Stop()
		if out, err := pg.Psql(ctx, pgFixture); err != nil {
			fmt.Fprintf(os.Stderr, "PostgreSQL fixture: %v\n%s\n", err, out)
			return 1
		}
		env.pg = pg
	}

	env.web = httptest.NewServer(http.HandlerFunc(webHandler))
	defer env.web.Close()
	env.webTLS = httptest.NewTLSServer(http.HandlerFunc(webHandler))
	defer env.webTLS.Close()
	env.webCA = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: env.webTLS.Certificate().Raw}))
	return m.Run()
}

// webUser/webPassword guard /private of the test web server.
const (
	webUser     = "api-user"
	webPassword = "api-Secret-9f2"
	bigBody     = 300 * 10240
)

func webHandler(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/private":
		if u, p, ok := r.BasicAuth(); !ok || u != webUser || p != webPassword {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, `{"user":%q}`, webUser)
	case "/big":
		w.Header().Set("Content-Type", "text/plain")
		chunk := []byte(strings.Repeat("abcdefghij", 1024))
		for n := 0; n < bigBody; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	case "/echo-auth":
		// an echo service: what a server an operator picked would do with a credential
		fmt.Fprintf(w, `{"authorization":%q,"x-api-key":%q}`, r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"))
	case "/to-plaintext":
		http.Redirect(w, r, env.web.URL+"/private", http.StatusFound)
	case "/echo":
		w.Header().Set("Content-Type", "application/json")
		b := make([]byte, 4096)
		n, _ := r.Body.Read(b)
		fmt.Fprintf(w, `{"method":%q,"header":%q,"body":%q}`, r.Method, r.Header.Get("X-Test"), b[:n])
	case "/slow":
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	default:
		http.NotFound(w, r)
	}
}

// pgFixture is the truth the sql_query cases compare with.
const pgFixture = `
CREATE TABLE inventory (id int PRIMARY KEY, name text NOT NULL, serial text, ram_gb int, seen timestamptz, tags text[], data bytea);
INSERT INTO inventory SELECT i, 'host-' || i, 'SN' || lpad(i::text, 5, '0'), 4 * i, '2026-01-01T00:00:00Z'::timestamptz + i * interval '1 hour', ARRAY['a','b'], '\x00ff'::bytea FROM generate_series(1, 25) i;
CREATE SEQUENCE ticket;
CREATE ROLE reader LOGIN PASSWORD 'reader-pw-5521';
GRANT SELECT ON inventory TO reader;
GRANT USAGE ON SEQUENCE ticket TO reader;
CREATE TABLE notes (id serial PRIMARY KEY, body text);
GRANT INSERT, SELECT ON notes TO reader;
GRANT USAGE ON SEQUENCE notes_id_seq TO reader;
`

const pgInventoryRows = 25
