package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"
	"time"
)

// Multi-tier application services: a web server (the existing nginx or Apache of a linux
// host) proxies to an application server on another linux host (Tomcat, a Spring Boot jar
// or a gunicorn app), which holds a connection to a database host. Every host answers
// consistently: the web host's configuration names the app host and its `ss -tnp` shows an
// established connection from a worker to the app's port; the app host's `ss -ltnp`
// listens there and shows the inbound socket, its configuration (JDBC URL, pg_service.conf
// or my.cnf) names the database by FQDN (`getent hosts` resolves it) and it holds a
// connection to it; the database shows the inbound socket on a backend process. Two
// services share a database; the first service's web server also lists a dead backend.
// Service Mapping is tested against this.

// AppService is one application service of the lab, for Service Mapping's tests.
type AppService struct {
	Name string `json:"name"`
	// Entry is where users reach it: http://IP:PORT/.
	Entry string `json:"entry"`
	// Edges are the traffic between tiers, IP:PORT of the listening end on both sides.
	Edges []AppEdge `json:"edges"`
}

// AppEdge is one hop of an application service's traffic.
type AppEdge struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Dead: the configuration names this backend but nothing answers there.
	Dead bool `json:"dead,omitempty"`
}

// tcpConn is an established TCP socket of a host, as `ss -tnp` shows it.
type tcpConn struct {
	local, peer netip.AddrPort
	comm        string
	pid, fd     int
}

// appServerKinds are the application servers the lab runs: process, command line, port,
// configuration file and how it names its database.
var appServerKinds = []string{"tomcat", "spring_boot", "gunicorn"}

// planAppServices wires web, application and database hosts into application services.
// It runs after every linux host is built and changes nothing of hosts it does not use.
func (p *plan) planAppServices() {
	var webs, apps, dbs []*host
	var dead *host
	for _, h := range p.hosts {
		switch {
		case h.class == ClassDead && dead == nil:
			dead = h
		case h.class != ClassLinux || h.lx == nil:
		case h.lx.web != "":
			webs = append(webs, h)
		case h.lx.db == "":
			apps = append(apps, h)
		}
		if h.class == ClassLinux && h.lx != nil && h.lx.db != "" {
			dbs = append(dbs, h)
		}
	}
	n := min(len(webs), len(apps))
	if n == 0 || len(dbs) == 0 {
		return
	}
	names := map[string]string{}
	for _, h := range p.hosts {
		if h.fqdn != "" && h.lx != nil {
			names[h.fqdn] = h.ip.String()
			names[strings.ToLower(h.name)] = h.ip.String()
		}
	}
	r := rng(p.cfg.Seed, "app-services", 0)
	ephemeral := func() uint16 { return uint16(32768 + r.IntN(28000)) }
	for i := range n {
		web, app := webs[i], apps[i]
		// services 2k and 2k+1 share a database: the shared-database case
		db := dbs[(i/2)%len(dbs)]
		name := fmt.Sprintf("%s%d", pickOne(r, []string{"payroll", "portal", "crm", "billing", "hr", "orders", "wiki", "tickets"}), i+1)
		kind := appServerKinds[(i+int(p.cfg.Seed))%len(appServerKinds)]
		dbApp := db.lx.apps[len(db.lx.apps)-1]
		dbPort := dbApp.ports[0]
		appPort := 8080
		if kind == "gunicorn" {
			appPort = 8000
		}
		webAddr := netip.AddrPortFrom(web.ip, 80)
		appAddr := netip.AddrPortFrom(app.ip, uint16(appPort))
		dbAddr := netip.AddrPortFrom(db.ip, uint16(dbPort))
		backends := []netip.AddrPort{appAddr}
		svc := AppService{Name: name, Entry: fmt.Sprintf("http://%s/", webAddr), Edges: []AppEdge{
			{From: webAddr.String(), To: appAddr.String()}, {From: appAddr.String(), To: dbAddr.String()}}}
		if i == 0 {
			// a backend the configuration still names but that is gone
			if dead != nil {
				deadAddr := netip.AddrPortFrom(dead.ip, 8080)
				backends = append(backends, deadAddr)
				svc.Edges = append(svc.Edges, AppEdge{From: webAddr.String(), To: deadAddr.String(), Dead: true})
			}
		}
		p.appServices = append(p.appServices, svc)

		// the web tier: its configuration and a worker's connection to the live backend
		wx := web.lx
		wx.addFile(webConfigPath(web, name), webConfig(web, name, backends))
		webApp := wx.apps[0]
		worker := webApp.pid
		if len(webApp.procs) > 0 {
			worker = webApp.procs[0]
		}
		webLocal := netip.AddrPortFrom(web.ip, ephemeral())
		wx.conns = append(wx.conns, tcpConn{local: webLocal, peer: appAddr, comm: webApp.v.process, pid: worker, fd: 12 + i})

		// the application tier
		ax := app.lx
		ax.resolver = names
		a := ax.addAppServer(kind, name, appPort, db, dbPort)
		ax.conns = append(ax.conns, tcpConn{local: appAddr, peer: webLocal, comm: a.v.process, pid: a.pid, fd: 20})
		appLocal := netip.AddrPortFrom(app.ip, ephemeral())
		ax.conns = append(ax.conns, tcpConn{local: appLocal, peer: dbAddr, comm: a.v.process, pid: a.pid, fd: 21})
		app.services = append(app.services, service{port: appPort, kind: svcHTTP, app: a})
		app.web[appPort] = &webSite{port: appPort, server: a.v.server, status: 200, title: name}
		app.m.Web = append(app.m.Web, WebService{Port: appPort, Server: a.v.server, Status: 200, Title: name})
		app.m.AppServers = append(app.m.AppServers, Application{Name: a.v.name, Version: a.v.version, Class: a.v.class, Process: a.v.process, Ports: a.ports})

		// the database tier: a backend process holds the inbound socket
		backend := dbApp.pid + 40 + i
		db.lx.addBackend(name, dbAddr, appLocal, backend)
		p.tiers = append(p.tiers, appTier{app: app, inst: a, appLocal: appLocal, db: db, dbAddr: dbAddr, backend: backend})
	}
}

// appTier is how one app service's application and database tiers are wired.
type appTier struct {
	app      *host
	inst     *appInstance
	appLocal netip.AddrPort // the application's end of its database connection
	db       *host
	dbAddr   netip.AddrPort
	backend  int // the database process holding the inbound socket
}

// addBackend shows the database's side of an application's connection: the inbound
// socket on a backend process (PostgreSQL forks one per connection; MySQL holds it in mysqld).
func (lx *linuxSpec) addBackend(name string, dbAddr, appLocal netip.AddrPort, backend int) {
	dbApp := lx.apps[len(lx.apps)-1]
	lx.procs = slices.Clone(lx.procs) // copy on write: a command may still range over the old
	pid := backend
	if dbApp.v.name != "postgresql" {
		pid = dbApp.pid
	}
	lx.conns = append(lx.conns, tcpConn{local: dbAddr, peer: appLocal, comm: dbApp.v.process, pid: pid, fd: 9})
	if dbApp.v.name == "postgresql" {
		prefix := "postgres: "
		if lx.d.family == "deb" {
			prefix += lx.d.versionMajorPG() + "/main: "
		}
		lx.procs = append(lx.procs, proc{backend, "postgres", "postgres", fmt.Sprintf("%s%s %s %s(%d) idle", prefix, name, name, appLocal.Addr(), appLocal.Port())})
		slices.SortFunc(lx.procs, func(a, b proc) int { return a.pid - b.pid })
		lx.procs = slices.CompactFunc(lx.procs, func(a, b proc) bool { return a.pid == b.pid })
	}
}

// removeBackend undoes addBackend.
func (lx *linuxSpec) removeBackend(dbAddr, appLocal netip.AddrPort, backend int) {
	lx.conns = slices.DeleteFunc(slices.Clone(lx.conns), func(c tcpConn) bool { return c.local == dbAddr && c.peer == appLocal })
	lx.procs = slices.DeleteFunc(slices.Clone(lx.procs), func(p proc) bool {
		return p.pid == backend && p.comm == "postgres" && strings.Contains(p.args, appLocal.Addr().String())
	})
}

// MoveDatabase moves an application service's database, while the lab runs, to another
// database host of the lab running the same engine (the lowest address after the current
// one, wrapping), as an operator migrating it would: the application's configuration names
// the new host, its connection goes there, the old database loses the inbound socket and
// its backend, the new one gains them, and the manifest's edge follows. Commands on those
// hosts see either the old wiring or the new, never half. It returns the new database's
// IP:PORT.
func (l *Lab) MoveDatabase(service string) (string, error) {
	p := l.plan
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(p.appServices, func(s AppService) bool { return s.Name == service })
	if i < 0 {
		return "", fmt.Errorf("lab: no app service %q", service)
	}
	t := &p.tiers[i]
	var dbs []*host
	for _, h := range p.hosts {
		if h.class == ClassLinux && h.lx != nil && h.lx.db != "" && h.lx.apps[len(h.lx.apps)-1].ports[0] == int(t.dbAddr.Port()) {
			dbs = append(dbs, h)
		}
	}
	if len(dbs) < 2 {
		return "", fmt.Errorf("lab: service %s: no other database host with the same engine (port %d) to move to; use a larger lab", service, t.dbAddr.Port())
	}
	j := slices.Index(dbs, t.db)
	to := dbs[(j+1)%len(dbs)]
	newAddr := netip.AddrPortFrom(to.ip, t.dbAddr.Port())
	old := t.db

	// the application: configuration and connection
	lock := func(hs ...*host) func() {
		for _, h := range hs {
			h.live.Lock()
		}
		return func() {
			for _, h := range hs {
				h.live.Unlock()
			}
		}
	}
	unlock := lock(t.app, old, to)
	ax := t.app.lx
	files := make(map[string]string, len(ax.files))
	for path, content := range ax.files {
		c := strings.ReplaceAll(content, fmt.Sprintf("%s:%d", old.fqdn, t.dbAddr.Port()), fmt.Sprintf("%s:%d", to.fqdn, newAddr.Port()))
		c = strings.ReplaceAll(c, "host="+old.fqdn+"\n", "host="+to.fqdn+"\n")
		files[path] = c
	}
	ax.files = files
	conns := slices.Clone(ax.conns)
	for k, c := range conns {
		if c.local == t.appLocal && c.peer == t.dbAddr {
			conns[k].peer = newAddr
		}
	}
	ax.conns = conns
	// the databases
	old.lx.removeBackend(t.dbAddr, t.appLocal, t.backend)
	backend := to.lx.apps[len(to.lx.apps)-1].pid + 40 + i
	to.lx.addBackend(service, newAddr, t.appLocal, backend)
	unlock()

	oldAddr := t.dbAddr
	t.db, t.dbAddr, t.backend = to, newAddr, backend
	edges := slices.Clone(p.appServices[i].Edges)
	for k, e := range edges {
		if e.To == oldAddr.String() && e.From == netip.AddrPortFrom(t.app.ip, uint16(t.inst.ports[0])).String() {
			edges[k].To = newAddr.String()
		}
	}
	p.appServices[i].Edges = edges
	b, err := json.Marshal(l.buildManifest())
	if err != nil {
		return "", fmt.Errorf("lab manifest: %w", err)
	}
	l.manifest = b
	return newAddr.String(), nil
}

// SetExecDelay makes every command run over SSH on host ip wait d first (0: none): a slow
// host, for tests that must act while a client is in the middle of its work.
func (l *Lab) SetExecDelay(ip string, d time.Duration) error {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("lab: %q: %w", ip, err)
	}
	h, ok := l.byIP[a]
	if !ok {
		return fmt.Errorf("lab: no host %s", ip)
	}
	h.live.Lock()
	h.execDelay = d
	h.live.Unlock()
	return nil
}

// runLive runs a command line on h under the host's read lock, after its exec delay.
func (l *Lab) runLive(ctx context.Context, h *host, env *shellEnv, line string) int {
	h.live.RLock()
	d := h.execDelay
	h.live.RUnlock()
	if d > 0 {
		select {
		case <-ctx.Done():
			return 130
		case <-time.After(d):
		}
	}
	h.live.RLock()
	defer h.live.RUnlock()
	return env.run(line)
}

func (lx *linuxSpec) addFile(p, content string) {
	if lx.files == nil {
		lx.files = map[string]string{}
	}
	lx.files[p] = content
}

// webConfigPath is where the distribution keeps a site's configuration.
func webConfigPath(h *host, name string) string {
	rpm := h.lx.d.family == "rpm"
	switch {
	case h.lx.web == "nginx" && rpm:
		return "/etc/nginx/conf.d/" + name + ".conf"
	case h.lx.web == "nginx":
		return "/etc/nginx/sites-enabled/" + name
	case rpm:
		return "/etc/httpd/conf.d/" + name + ".conf"
	default:
		return "/etc/apache2/sites-enabled/" + name + ".conf"
	}
}

func webConfig(h *host, name string, backends []netip.AddrPort) string {
	var b strings.Builder
	fqdn := name + "." + strings.TrimPrefix(h.fqdn, strings.ToLower(h.name)+".")
	if h.lx.web == "nginx" {
		fmt.Fprintf(&b, "upstream %s_app {\n", name)
		for _, a := range backends {
			fmt.Fprintf(&b, "    server %s max_fails=3 fail_timeout=30s;\n", a)
		}
		fmt.Fprintf(&b, "    keepalive 16;\n}\n\nserver {\n    listen 80;\n    listen [::]:80;\n    server_name %s;\n\n", fqdn)
		fmt.Fprintf(&b, "    access_log /var/log/nginx/%s.access.log;\n\n    location / {\n        proxy_pass http://%s_app;\n", name, name)
		b.WriteString("        proxy_http_version 1.1;\n        proxy_set_header Connection \"\";\n        proxy_set_header Host $host;\n        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }\n}\n")
		return b.String()
	}
	fmt.Fprintf(&b, "<VirtualHost *:80>\n    ServerName %s\n    ProxyPreserveHost On\n", fqdn)
	if len(backends) == 1 {
		fmt.Fprintf(&b, "    ProxyPass / http://%s/\n    ProxyPassReverse / http://%s/\n", backends[0], backends[0])
	} else {
		fmt.Fprintf(&b, "    <Proxy balancer://%s>\n", name)
		for _, a := range backends {
			fmt.Fprintf(&b, "        BalancerMember http://%s\n", a)
		}
		fmt.Fprintf(&b, "    </Proxy>\n    ProxyPass / balancer://%s/\n    ProxyPassReverse / balancer://%s/\n", name, name)
	}
	fmt.Fprintf(&b, "    ErrorLog ${APACHE_LOG_DIR}/%s_error.log\n</VirtualHost>\n", name)
	return b.String()
}

// addAppServer runs an application server of the given kind on the host, listening on
// port, configured to use the database on db.
func (lx *linuxSpec) addAppServer(kind, name string, port int, db *host, dbPort int) *appInstance {
	engine := "postgresql"
	if dbPort == 3306 {
		engine = "mysql"
	}
	jdbc := fmt.Sprintf("jdbc:%s://%s:%d/%s", engine, db.fqdn, dbPort, name)
	var v appVariant
	pid := 0
	for _, p := range lx.procs {
		pid = max(pid, p.pid)
	}
	pid += 11
	switch kind {
	case "tomcat":
		v = appVariant{name: "tomcat", class: "app_server", version: "9.0.70", process: "java", user: "tomcat", server: "",
			args: "/usr/lib/jvm/java-17-openjdk-amd64/bin/java -Djava.util.logging.config.file=/var/lib/tomcat9/conf/logging.properties -Djava.util.logging.manager=org.apache.juli.ClassLoaderLogManager -Djava.awt.headless=true -classpath /usr/share/tomcat9/bin/bootstrap.jar:/usr/share/tomcat9/bin/tomcat-juli.jar -Dcatalina.base=/var/lib/tomcat9 -Dcatalina.home=/usr/share/tomcat9 -Djava.io.tmpdir=/tmp org.apache.catalina.startup.Bootstrap start"}
		lx.addFile("/var/lib/tomcat9/conf/context.xml", fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<Context>
    <WatchedResource>WEB-INF/web.xml</WatchedResource>
    <Resource name="jdbc/%s" auth="Container" type="javax.sql.DataSource"
              maxTotal="20" maxIdle="10" maxWaitMillis="-1"
              username="%s" password="********"
              driverClassName="org.postgresql.Driver"
              url="%s"/>
</Context>
`, name, name, jdbc))
		lx.addFile("/var/lib/tomcat9/conf/server.xml", fmt.Sprintf("<Server port=\"-1\" shutdown=\"SHUTDOWN\">\n  <Service name=\"Catalina\">\n    <Connector port=\"%d\" protocol=\"HTTP/1.1\" connectionTimeout=\"20000\"/>\n  </Service>\n</Server>\n", port))
	case "spring_boot":
		v = appVariant{name: "spring_boot", class: "app_server", version: "3.2.5", process: "java", user: name,
			args: fmt.Sprintf("/usr/bin/java -Xms512m -Xmx1g -jar /opt/%s/%s.jar --spring.config.location=file:/opt/%s/application.properties", name, name, name)}
		lx.addFile("/opt/"+name+"/application.properties", fmt.Sprintf("server.port=%d\nspring.application.name=%s\nspring.datasource.url=%s\nspring.datasource.username=%s\nspring.jpa.open-in-view=false\nmanagement.endpoints.web.exposure.include=health\n", port, name, jdbc, name))
	default: // gunicorn
		v = appVariant{name: "gunicorn", class: "app_server", version: "20.1.0", process: "gunicorn", user: name,
			args: fmt.Sprintf("/opt/%s/venv/bin/python3 /opt/%s/venv/bin/gunicorn --workers 3 --bind 0.0.0.0:%d %s.wsgi:application", name, name, port, name)}
		if engine == "postgresql" {
			lx.addFile("/etc/"+name+"/pg_service.conf", fmt.Sprintf("[%s]\nhost=%s\nport=%d\ndbname=%s\nuser=%s\n", name, db.fqdn, dbPort, name, name))
		} else {
			lx.addFile("/etc/"+name+"/my.cnf", fmt.Sprintf("[client]\nhost=%s\nport=%d\ndatabase=%s\nuser=%s\n", db.fqdn, dbPort, name, name))
		}
	}
	v.server = map[string]string{"tomcat": "", "spring_boot": "", "gunicorn": "gunicorn"}[kind]
	a := &appInstance{v: v, ports: []int{port}, pid: pid}
	lx.apps = append(lx.apps, a)
	lx.procs = append(lx.procs, proc{pid, v.user, v.process, v.args})
	return a
}

// expandGlob expands a path with * ? [ like sh does against the host's files; a pattern
// that matches nothing stays as it is (bash without nullglob).
func (lx *linuxSpec) expandGlob(p string) []string {
	if !strings.ContainsAny(p, "*?[") {
		return []string{p}
	}
	var out []string
	for f := range lx.files {
		if ok, _ := path.Match(p, f); ok {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return []string{p}
	}
	slices.Sort(out)
	return out
}

// established is what `ss -tn` lists besides listeners.
func (lx *linuxSpec) established() []tcpConn {
	return lx.conns
}
