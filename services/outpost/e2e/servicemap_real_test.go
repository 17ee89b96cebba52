package e2e

// Service Mapping against real software: Debian's nginx proxying to a small application
// ("ledger", this test binary re-executed) that holds a connection to a real PostgreSQL,
// each on its own loopback address. The hub maps it through a real bridge whose ssh_exec
// probes log in to an SSH server on each of those addresses (libs/lab/realhost) that runs
// this machine's real `ss`, `ps`, `cat`, `hostname`, `uname` and `getent` — the only
// difference from production is that the three "hosts" are one machine, reached over SSH
// servers the test starts because no SSH server of this machine may be logged in to.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	api "github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/libs/lab/realhost"
	"github.com/outpost-dev/outpost/libs/pgserver"
)

// ledgerEnv makes the test binary the ledger application (TestMain).
const ledgerEnv = "OUTPOST_E2E_LEDGER"

// runLedger is the application tier: `ledger -config FILE` reads `listen=` and `database=`
// from FILE, keeps one connection to its database open and answers HTTP with a row.
func runLedger() int {
	conf := ""
	for i, a := range os.Args {
		if a == "-config" && i+1 < len(os.Args) {
			conf = os.Args[i+1]
		}
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ledger:", err)
		return 2
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	db, err := sql.Open("pgx", kv["database"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "ledger:", err)
		return 1
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	if err := db.Ping(); err != nil {
		fmt.Fprintln(os.Stderr, "ledger: database:", err)
		return 1
	}
	srv := &http.Server{Addr: kv["listen"], ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v string
		if err := db.QueryRowContext(r.Context(), "SELECT 'ledger ok from ' || current_database()").Scan(&v); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		io.WriteString(w, v+"\n")
	})}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "ledger:", err)
		return 1
	}
	return 0
}

// ledgerPattern recognises the ledger: a pattern file given to the hub, no Go code.
const ledgerPattern = `patterns:
  - name: ledger
    class: app_server
    match: {process: '^ledger$'}
    vars: {conf: '-config\s+(?P<conf>\S+)'}
    connections:
      - files: ['${conf}']
        find:
          - {regex: 'database\s*=\s*postgres://[^@\s]*@(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>\d+))?', default_port: 5432}
`

// copyFile copies the test binary where its name is the application's.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// daemon starts a process that runs until the test ends.
func daemon(t *testing.T, name string, args ...string) *syncBuffer {
	t.Helper()
	cmd := exec.Command(name, args...)
	buf := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	cmd.Env = append(os.Environ(), ledgerEnv+"=")
	if strings.HasSuffix(name, "/ledger") {
		cmd.Env = append(cmd.Env, ledgerEnv+"=1")
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- %s output:\n%s", filepath.Base(name), tail(buf.String(), 30))
		}
	})
	return buf
}

func TestServiceMapOfRealSoftware(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		nginx = "/usr/sbin/nginx"
		if _, serr := os.Stat(nginx); serr != nil {
			t.Skip("Debian's nginx is not installed (apt-get install nginx-light; .ci/run installs it): the real-software map needs it")
		}
	}
	const web, app, dbIP = "127.0.0.61", "127.0.0.62", "127.0.0.63"
	// the SSH servers of the three "hosts" first: they bind port 22, which tells whether
	// this test may bind well-known ports at all
	const sshUser, sshPass = "mapper", "real-host-pass-7f3e"
	hosts := map[string]*realhost.Host{}
	for _, ip := range []string{web, app, dbIP} {
		rh, err := realhost.Start(realhost.Config{Addr: ip + ":22", User: sshUser, Password: sshPass})
		if errors.Is(err, syscall.EACCES) {
			t.Skipf("binding %s:22 needs root or CAP_NET_BIND_SERVICE: %v", ip, err)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rh.Close() })
		hosts[ip] = rh
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := pgserver.Start(ctx, pgserver.Options{Host: dbIP, Port: 5432})
	if err != nil {
		t.Skipf("PostgreSQL: %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })

	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ledger := filepath.Join(dir, "ledger")
	copyFile(t, self, ledger)
	ledgerConf := filepath.Join(dir, "ledger.conf")
	if err := os.WriteFile(ledgerConf, []byte(fmt.Sprintf("listen=%s:8080\ndatabase=postgres://postgres@%s:5432/postgres?sslmode=disable\n", app, dbIP)), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon(t, ledger, "-config", ledgerConf)

	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n" // workers that may use the test's temporary directory
	}
	nginxConf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(nginxConf, []byte(fmt.Sprintf(`%sworker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
events { worker_connections 64; }
http {
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    upstream ledger_app {
        server %[3]s:8080;
        keepalive 4;
    }
    server {
        listen %[4]s:80;
        location / {
            proxy_pass http://ledger_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, user, dir, app, web)), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon(t, nginx, "-c", nginxConf, "-g", "daemon off;")
	// a request through nginx: the worker keeps its upstream connection (keepalive), as a
	// proxy in production does
	eventually(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + web + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "ledger ok") {
			return fmt.Errorf("GET through nginx: %d %s", resp.StatusCode, b)
		}
		return nil
	})

	patterns := filepath.Join(dir, "patterns")
	if err := os.MkdirAll(patterns, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(patterns, "ledger.yaml"), []byte(ledgerPattern), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &testHub{dir: t.TempDir(), http: freeAddr(t), nats: freeAddr(t), extra: []string{"--mapping-patterns", patterns}}
	h.restart(t)
	tok := h.addSite(t, "real", "127.0.0.60/30", true)
	startBridge(t, h, "real", "br1", tok)
	h.waitStatus(t, "br1", "up")
	h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": "real-ssh", "type": "ssh", "site": "real", "username": sshUser, "secret": sshPass}, nil)
	h.mustAPI(t, "POST", "/api/v1/services", map[string]any{"name": "ledger", "entry": "http://" + web + "/"}, nil)
	d := h.mapService(t, "ledger", false)
	// These "hosts" are all this machine, so its whole socket table holds every socket of
	// every test running beside this one (often far more than a probe's output cap): the
	// mapping asks ss for the entry port's listener and the found processes' sockets only,
	// so the map is whole whatever the table's size, and nothing of it was truncated.
	if out, err := exec.Command("ss", "-tanp").Output(); err == nil {
		t.Logf("this machine's socket table: %d bytes of `ss -tanp`", len(out))
	}
	for _, w := range d.Map.Warnings {
		if strings.Contains(w, "truncated") {
			t.Errorf("the mapping says an output was truncated: %s (warnings %q)", w, d.Map.Warnings)
		}
	}

	nodes := map[string]api.Node{}
	for _, n := range d.Map.Nodes {
		nodes[n.ID] = n
	}
	for _, want := range []struct{ id, app, class string }{
		{web + ":80", "nginx", "web_server"}, {app + ":8080", "ledger", "app_server"}, {dbIP + ":5432", "postgresql", "database"},
	} {
		n := nodes[want.id]
		if n.State != api.StateOK || n.Application != want.app || n.Class != want.class || n.CIID == "" || n.HostCIID == "" {
			t.Errorf("node %s: %+v; want %s (%s), ok, with its CI and host CI", want.id, n, want.app, want.class)
		}
	}
	edges := map[string]string{}
	for _, e := range d.Map.Edges {
		edges[e.From+" -> "+e.To] = e.FoundBy
	}
	want := map[string]string{web + ":80 -> " + app + ":8080": api.FoundBoth, app + ":8080 -> " + dbIP + ":5432": api.FoundBoth}
	for k, by := range want {
		if edges[k] != by {
			t.Errorf("edge %s found by %q, want %s (the configuration names it and a connection is established)", k, edges[k], by)
		}
	}
	if len(edges) != len(want) {
		t.Errorf("edges %v, want exactly %v", edges, want)
	}
	for ip, rh := range hosts {
		if ex := strings.Join(rh.Execs(), "\n"); !strings.Contains(ex, "ss -Hltnp 'sport = :") || !strings.Contains(ex, "ps -o pid=,comm=,args= -p ") {
			t.Errorf("the SSH server of %s ran %q: the map did not come from its real commands", ip, ex)
		}
	}
	if ex := strings.Join(hosts[web].Execs(), "\n"); !strings.Contains(ex, "cat "+nginxConf) {
		t.Errorf("nginx's configuration %s was not read on %s: %q", nginxConf, web, ex)
	}
	if _, err := net.Dial("tcp", dbIP+":5432"); err != nil {
		t.Errorf("PostgreSQL went away: %v", err)
	}
}
