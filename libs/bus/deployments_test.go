package bus_test

// Checks deployments/nats with nats-server's own parser, then boots the
// configurations in-process (loopback, random ports) to prove they also run:
// TLS on the client and WebSocket ports, JetStream in the HUB account, and a
// 3-node cluster that forms its full route mesh over mutual TLS.
//
// The configs reference certs/*.pem, which the parser loads at parse time
// (relative to the working directory), and no private key is committed: each
// test copies the tree into a temporary directory, generates a CA and a
// server certificate there, and changes into it.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

const (
	deploySrc = "../../deployments/nats"
	// A bcrypt hash, as recommended in accounts.conf: "$2a$..." values must
	// pass through the environment variable lookup untouched.
	deployHubPassword = "$2a$11$Q7x8tRHlJ3bWtqEF0b1w2uQ2m0m3Xh1R8o8Yk1h3b6xG0kq5v8M9e"
	deploySysPassword = "sys-dev-secret"
	// An account public NKey (made by nkeys.CreateAccount), standing for <data>/callout.nk.
	deployCalloutIssuer = "ABJHLOVMPA4CI6R5KLNGOB4GSLNIY7IOUPAJC4YFNDLQVIOBYQGUWVLA"
)

// deployNode is what a server config in deployments/nats must say.
type deployNode struct {
	file   string // relative to deployments/nats, slash-separated
	name   string
	client int
	ws     int
	http   int
	route  int // cluster port; 0 for the single hub
	store  string
}

var deployNodes = []deployNode{
	{file: "hub.conf", name: "hub", client: 4222, ws: 443, http: 8222, store: "data/hub"},
	{file: "cluster/n1.conf", name: "n1", client: 4222, ws: 8443, http: 8222, route: 6222, store: "data/n1"},
	{file: "cluster/n2.conf", name: "n2", client: 4223, ws: 8444, http: 8223, route: 6223, store: "data/n2"},
	{file: "cluster/n3.conf", name: "n3", client: 4224, ws: 8445, http: 8224, route: 6224, store: "data/n3"},
}

// deployFragments parse alone but carry only part of a server's config.
var deployFragments = []string{"accounts.conf"}

func TestDeployNATSConfigsParse(t *testing.T) {
	confs, _ := deploySetup(t)
	for _, want := range append(deployFragments, deployNodeFiles()...) {
		if !slices.Contains(confs, want) {
			t.Errorf("deployments/nats/%s is missing (found %v)", want, confs)
		}
	}

	for _, file := range confs {
		t.Run(file, func(t *testing.T) {
			opts, err := server.ProcessConfigFile(filepath.FromSlash(file))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			// Every file carries (or includes) the same accounts.
			deployCheckAccounts(t, opts)
			if n, ok := deployNodeFor(file); ok {
				deployCheckNode(t, n, opts)
			} else if !slices.Contains(deployFragments, file) {
				t.Logf("%s parses; no specific expectations for it", file)
			}
		})
	}
}

// The passwords come only from the environment: without them the configs
// must not load (fail closed rather than run with an empty password).
func TestDeployNATSConfigsNeedPasswords(t *testing.T) {
	deploySetup(t)
	if err := os.Unsetenv("HUB_PASSWORD"); err != nil { // restored by t.Setenv's cleanup
		t.Fatal(err)
	}
	for _, file := range append(deployFragments, deployNodeFiles()...) {
		_, err := server.ProcessConfigFile(filepath.FromSlash(file))
		if err == nil || !strings.Contains(err.Error(), "HUB_PASSWORD") {
			t.Errorf("%s without $HUB_PASSWORD: err = %v, want an error naming HUB_PASSWORD", file, err)
		}
	}
}

func TestDeployNATSHubRuns(t *testing.T) {
	_, pool := deploySetup(t)
	opts, err := server.ProcessConfigFile("hub.conf")
	if err != nil {
		t.Fatal(err)
	}
	deployLoopback(t, opts)
	s := deployStart(t, opts)

	if !s.JetStreamEnabled() {
		t.Error("JetStream is not enabled")
	}
	for name, wantJS := range map[string]bool{"HUB": true, "SYS": false, "BRIDGES": false} {
		acc, err := s.LookupAccount(name)
		if err != nil {
			t.Errorf("account %s: %v", name, err)
			continue
		}
		if got := acc.JetStreamEnabled(); got != wantJS {
			t.Errorf("account %s: JetStream enabled = %v, want %v", name, got, wantJS)
		}
	}
	if sys := s.SystemAccount(); sys == nil || sys.Name != "SYS" {
		t.Errorf("system account = %v, want SYS", sys)
	}

	info := deployClientTLS(t, s.Addr().String(), pool)
	if !info.TLSRequired || info.ServerName != "hub" || !info.JetStream || info.Domain != "" {
		t.Errorf("client INFO = %+v, want tls_required, server_name hub, jetstream, no domain", info)
	}

	ports := s.PortsInfo(5 * time.Second)
	if ports == nil || len(ports.WebSocket) == 0 {
		t.Fatalf("no websocket listener: %+v", ports)
	}
	deployWebSocketTLS(t, ports.WebSocket[0], pool)
}

// Boots the three cluster nodes with the routes of their files, remapped
// from 6222-6224 to free loopback ports. (A JetStream cluster node refuses to
// start without routes, so they cannot simply be random ports learnt later;
// a port taken between deployFreePort and the start is the one, tiny, race.)
// Measured: ~0.1 s for the route mesh, 0.3-0.7 s up to an elected JetStream
// meta leader (0.5 s for the whole test under -race).
func TestDeployNATSClusterForms(t *testing.T) {
	deploySetup(t)
	ports := map[int]int{} // configured cluster port -> free port
	for _, n := range deployNodes {
		if n.route != 0 {
			ports[n.route] = deployFreePort(t)
		}
	}
	var servers []*server.Server
	start := time.Now()
	for _, n := range deployNodes {
		if n.route == 0 {
			continue
		}
		opts, err := server.ProcessConfigFile(filepath.FromSlash(n.file))
		if err != nil {
			t.Fatal(err)
		}
		deployLoopback(t, opts)
		opts.Cluster.Port = ports[n.route]
		for _, u := range opts.Routes {
			configured, _ := strconv.Atoi(u.Port())
			free, ok := ports[configured]
			if !ok {
				t.Fatalf("%s: route %s is not one of the cluster nodes", n.file, u)
			}
			u.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(free))
		}
		servers = append(servers, deployStart(t, opts))
	}

	deployWaitFor(t, 10*time.Second, "full route mesh", func() error {
		for _, s := range servers {
			if got := s.NumRemotes(); got != len(servers)-1 {
				return fmt.Errorf("%s sees %d remotes, want %d", s.Name(), got, len(servers)-1)
			}
		}
		return nil
	})
	t.Logf("route mesh formed in %v", time.Since(start).Round(time.Millisecond))

	deployWaitFor(t, 10*time.Second, "JetStream meta leader", func() error {
		leaders := 0
		for _, s := range servers {
			if !s.JetStreamIsClustered() {
				return fmt.Errorf("%s: JetStream not clustered", s.Name())
			}
			if s.JetStreamIsLeader() {
				leaders++
			}
		}
		if leaders != 1 {
			return fmt.Errorf("%d meta leaders", leaders)
		}
		for _, s := range servers {
			if !s.JetStreamIsCurrent() {
				return fmt.Errorf("%s: JetStream not current", s.Name())
			}
		}
		return nil
	})
	t.Logf("JetStream cluster ready in %v", time.Since(start).Round(time.Millisecond))
}

// deploySetup copies deployments/nats (without certs/ or data/) into a
// temporary directory, generates certs/ there, sets the password variables
// and changes into it. It returns the *.conf files (slash-separated, sorted)
// and a pool trusting the generated CA.
func deploySetup(t *testing.T) ([]string, *x509.CertPool) {
	t.Helper()
	src, err := filepath.Abs(deploySrc)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	var confs []string
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && (rel == "certs" || rel == "data"):
			return filepath.SkipDir
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		case !d.Type().IsRegular():
			return nil
		}
		if strings.HasSuffix(rel, ".conf") {
			confs = append(confs, filepath.ToSlash(rel))
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	if len(confs) == 0 {
		t.Fatalf("no *.conf files under %s", src)
	}
	slices.Sort(confs)

	pool := deployCerts(t, filepath.Join(dst, "certs"))
	t.Setenv("HUB_PASSWORD", deployHubPassword)
	t.Setenv("SYS_PASSWORD", deploySysPassword)
	// The auth callout's issuer: any account public key parses.
	t.Setenv("CALLOUT_ISSUER", deployCalloutIssuer)
	t.Chdir(dst)
	return confs, pool
}

// deployCerts writes ca.pem, server.pem and server-key.pem (ECDSA P-256,
// valid for localhost, 127.0.0.1 and ::1, server and client auth) into dir.
func deployCerts(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"Outpost test"}, CommonName: "Outpost test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{Organization: []string{"Outpost test"}, CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// clientAuth too: cluster nodes present it to each other (mutual TLS).
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}

	for name, blk := range map[string]*pem.Block{
		"ca.pem":         {Type: "CERTIFICATE", Bytes: caDER},
		"server.pem":     {Type: "CERTIFICATE", Bytes: der},
		"server-key.pem": {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(blk), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool
}

func deployNodeFiles() []string {
	var files []string
	for _, n := range deployNodes {
		files = append(files, n.file)
	}
	return files
}

func deployNodeFor(file string) (deployNode, bool) {
	for _, n := range deployNodes {
		if n.file == file {
			return n, true
		}
	}
	return deployNode{}, false
}

func deployCheckAccounts(t *testing.T, opts *server.Options) {
	t.Helper()
	if opts.SystemAccount != "SYS" {
		t.Errorf("system_account = %q, want SYS", opts.SystemAccount)
	}
	var accs []string
	for _, a := range opts.Accounts {
		accs = append(accs, a.Name)
	}
	for _, want := range []string{"HUB", "SYS"} {
		if !slices.Contains(accs, want) {
			t.Errorf("accounts = %v, want %s among them", accs, want)
		}
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	for _, want := range []struct{ user, account, password string }{
		{"hub", "HUB", deployHubPassword},
		{"sys", "SYS", deploySysPassword},
	} {
		u := users[want.user]
		switch {
		case u == nil:
			t.Errorf("no user %q", want.user)
		case u.Account == nil || u.Account.Name != want.account:
			t.Errorf("user %q: account %v, want %s", want.user, u.Account, want.account)
		case u.Password != want.password:
			t.Errorf("user %q: password %q, want the value of the environment variable %q", want.user, u.Password, want.password)
		}
	}
}

func deployCheckNode(t *testing.T, n deployNode, o *server.Options) {
	t.Helper()
	if o.ServerName != n.name {
		t.Errorf("server_name = %q, want %q", o.ServerName, n.name)
	}
	if o.Port != n.client {
		t.Errorf("client port = %d, want %d", o.Port, n.client)
	}
	// Client port: TLS with our certificate, client certs optional.
	if o.TLSConfig == nil || len(o.TLSConfig.Certificates) != 1 {
		t.Errorf("client port: no TLS certificate loaded (tls = %v)", o.TLSConfig)
	} else if o.TLSConfig.ClientAuth != tls.NoClientCert {
		t.Errorf("client port: ClientAuth = %v, want client certificates optional (bridges use NKeys)", o.TLSConfig.ClientAuth)
	}
	if o.TLSTimeout < 5 {
		t.Errorf("client TLS timeout = %v s, want >= 5 s for bridges on slow WANs", o.TLSTimeout)
	}
	if o.Websocket.Port != n.ws || o.Websocket.TLSConfig == nil || o.Websocket.NoTLS {
		t.Errorf("websocket: port %d tls %v no_tls %v, want port %d with TLS", o.Websocket.Port, o.Websocket.TLSConfig != nil, o.Websocket.NoTLS, n.ws)
	}
	if !o.JetStream || o.JetStreamDomain != "" || o.StoreDir != n.store {
		t.Errorf("jetstream: enabled %v domain %q store %q, want enabled, no domain (as the embedded hub), store %q", o.JetStream, o.JetStreamDomain, o.StoreDir, n.store)
	}
	if o.JetStreamMaxMemory <= 0 || o.JetStreamMaxStore <= 0 {
		t.Errorf("jetstream limits: max_mem %d max_file %d, want both set", o.JetStreamMaxMemory, o.JetStreamMaxStore)
	}
	if o.HTTPHost != "127.0.0.1" || o.HTTPPort != n.http {
		t.Errorf("monitoring on %s:%d, want 127.0.0.1:%d (loopback only)", o.HTTPHost, o.HTTPPort, n.http)
	}

	if n.route == 0 {
		if o.Cluster.Name != "" || o.Cluster.Port != 0 || len(o.Routes) != 0 {
			t.Errorf("single hub has a cluster block: %+v routes %v", o.Cluster, o.Routes)
		}
		return
	}
	if o.Cluster.Name != "outpost-hub" || o.Cluster.Port != n.route {
		t.Errorf("cluster %q port %d, want outpost-hub port %d", o.Cluster.Name, o.Cluster.Port, n.route)
	}
	// The parser forces RequireAndVerifyClientCert on routes whatever
	// `verify` says; without ca_file peers would be checked against the
	// system roots instead of our CA.
	if c := o.Cluster.TLSConfig; c == nil || c.ClientAuth != tls.RequireAndVerifyClientCert || c.ClientCAs == nil || c.RootCAs == nil {
		t.Errorf("cluster: want mutual TLS against ca_file, got %+v", c)
	}
	var got, want []string
	for _, u := range o.Routes {
		got = append(got, u.Port())
	}
	for _, m := range deployNodes {
		if m.route != 0 && m.route != n.route {
			want = append(want, fmt.Sprint(m.route))
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("routes to ports %v, want the other nodes %v", got, want)
	}
}

// deployLoopback moves every listener to 127.0.0.1 on a random port and the
// store into a temporary directory, so tests never clash with anything.
func deployLoopback(t *testing.T, o *server.Options) {
	o.Host, o.Port = "127.0.0.1", -1
	o.HTTPHost, o.HTTPPort = "127.0.0.1", -1
	o.Websocket.Host, o.Websocket.Port = "127.0.0.1", -1
	if o.Cluster.Name != "" {
		o.Cluster.Host, o.Cluster.Port = "127.0.0.1", -1
	}
	o.StoreDir = t.TempDir()
	o.NoLog, o.NoSigs = true, true
}

// deployFreePort returns a loopback port that was free a moment ago.
func deployFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func deployStart(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("%s: %v", opts.ServerName, err)
	}
	go s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	// Generous: a clustered JetStream node once took over 10 s to get ready on the loaded
	// 2-core test machine (this test failed there with nothing wrong).
	if !s.ReadyForConnections(60 * time.Second) {
		t.Fatalf("%s: not ready for connections within 60 s", opts.ServerName)
	}
	return s
}

type deployInfo struct {
	TLSRequired bool   `json:"tls_required"`
	ServerName  string `json:"server_name"`
	JetStream   bool   `json:"jetstream"`
	Domain      string `json:"domain"`
}

// deployClientTLS speaks the start of the NATS protocol by hand: the server
// sends INFO in clear, then the client must upgrade to TLS.
func deployClientTLS(t *testing.T, addr string, pool *x509.CertPool) deployInfo {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read INFO: %v", err)
	}
	var info deployInfo
	body, ok := strings.CutPrefix(strings.TrimSpace(line), "INFO ")
	if !ok {
		t.Fatalf("first line %q is not INFO", line)
	}
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatalf("INFO %s: %v", body, err)
	}
	tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("client port TLS handshake: %v", err)
	}
	return info
}

// deployWebSocketTLS opens wss:// and checks the server upgrades to WebSocket.
func deployWebSocketTLS(t *testing.T, wsURL string, pool *x509.CertPool) {
	t.Helper()
	u, err := url.Parse(wsURL)
	if err != nil || u.Scheme != "wss" {
		t.Fatalf("websocket URL %q: want wss:// (err %v)", wsURL, err)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", u.Host, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("websocket TLS: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", u.Host, base64.StdEncoding.EncodeToString(nonce))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("websocket upgrade: %v", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("websocket upgrade: status %q, want 101", strings.TrimSpace(status))
	}
}

func deployWaitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reached within %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
