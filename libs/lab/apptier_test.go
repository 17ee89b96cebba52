package lab_test

import (
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/lab"
)

// The app tiers' hosts agree with each other and with the manifest: every live edge is an
// established connection on the "from" host whose peer listens on the "to" host, the
// "from" host's configuration names the "to" end (by address or by a name getent
// resolves to it), a dead edge's target does not answer, and two services share a database.
func TestAppServicesAreConsistent(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.180.0/24", 80)
	checkAppServices(t, l, true)
}

// A database moved while the lab runs: the manifest's app → database edge follows, the
// hosts agree with it (configuration, connections, inbound socket), the old database no
// longer shows the connection, and nothing else of the manifest changed.
func TestMoveDatabase(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.181.0/24", 80)
	before := l.Manifest()
	svc := before.AppServices[0]
	oldDB := svc.Edges[1].To
	to, err := l.MoveDatabase(svc.Name)
	if err != nil {
		t.Fatal(err)
	}
	after := l.Manifest()
	if to == oldDB || after.AppServices[0].Edges[1].To != to {
		t.Fatalf("moved to %s; edges now %+v (was %s)", to, after.AppServices[0].Edges, oldDB)
	}
	for i := range before.AppServices {
		b, a := before.AppServices[i], after.AppServices[i]
		for k := range b.Edges {
			if (i != 0 || k != 1) && b.Edges[k] != a.Edges[k] {
				t.Errorf("%s: edge %d changed: %+v → %+v", b.Name, k, b.Edges[k], a.Edges[k])
			}
		}
	}
	checkAppServices(t, l, false)
	byIP := map[string]lab.Host{}
	for _, h := range after.Hosts {
		byIP[h.IP] = h
	}
	oldIP, _, _ := net.SplitHostPort(oldDB)
	c, err := sshClient(t, byIP[oldIP])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	appIP, _, _ := net.SplitHostPort(svc.Edges[1].From)
	for _, line := range strings.Split(sshRun(t, c, "ss -tnp").stdout, "\n") {
		if strings.Contains(line, oldDB) && strings.Contains(line, appIP+":") {
			t.Errorf("the old database %s still shows the moved connection: %s", oldDB, line)
		}
	}
	if _, err := l.MoveDatabase("no-such-service"); err == nil {
		t.Error("moving the database of an unknown service: no error")
	}
}

// checkAppServices checks every edge of the manifest against what the hosts answer; shared
// asks for a database used by two services.
func checkAppServices(t *testing.T, l *lab.Lab, shared bool) {
	t.Helper()
	m := l.Manifest()
	if len(m.AppServices) < 3 {
		t.Fatalf("%d app services in an 80-host lab, want at least 3", len(m.AppServices))
	}
	byIP := map[string]lab.Host{}
	for _, h := range m.Hosts {
		byIP[h.IP] = h
	}
	dbUsers := map[string]int{}
	deadEdges := 0
	run := func(ip, cmd string) string {
		t.Helper()
		c, err := sshClient(t, byIP[ip])
		if err != nil {
			t.Fatalf("ssh %s: %v", ip, err)
		}
		defer c.Close()
		r := sshRun(t, c, cmd)
		return r.stdout
	}
	estab := regexp.MustCompile(`(?m)^ESTAB\s+\d+\s+\d+\s+(\S+)\s+(\S+)\s+users:\(\("([^"]+)",pid=(\d+)`)
	for _, s := range m.AppServices {
		if !strings.HasPrefix(s.Entry, "http://") {
			t.Errorf("%s: entry %q", s.Name, s.Entry)
		}
		for _, e := range s.Edges {
			fromIP, _, _ := net.SplitHostPort(e.From)
			toIP, toPort, _ := net.SplitHostPort(e.To)
			conns := run(fromIP, "ss -tnp")
			cfg := run(fromIP, "cat /etc/nginx/sites-enabled/* /etc/nginx/conf.d/*.conf /etc/apache2/sites-enabled/*.conf /etc/httpd/conf.d/*.conf /var/lib/tomcat9/conf/context.xml /opt/*/application.properties /etc/*/pg_service.conf /etc/*/my.cnf")
			named := strings.Contains(cfg, e.To)
			if !named {
				// by name: the configuration names the FQDN of the target host
				if h := byIP[toIP]; h.FQDN != "" && strings.Contains(cfg, h.FQDN) {
					if got := run(fromIP, "getent hosts "+h.FQDN); !strings.HasPrefix(got, toIP+" ") {
						t.Errorf("%s: getent hosts %s on %s = %q, want %s", s.Name, h.FQDN, fromIP, got, toIP)
					}
					named = true
				}
			}
			if !named {
				t.Errorf("%s: the configuration on %s does not name %s:\n%s", s.Name, fromIP, e.To, cfg)
			}
			seen := false
			for _, mm := range estab.FindAllStringSubmatch(conns, -1) {
				if mm[2] == e.To {
					seen = true
				}
			}
			if e.Dead {
				deadEdges++
				if seen {
					t.Errorf("%s: dead edge %s has an established connection", s.Name, e.To)
				}
				if c, err := net.Dial("tcp", e.To); err == nil {
					c.Close()
					t.Errorf("%s: dead backend %s answers", s.Name, e.To)
				}
				continue
			}
			if !seen {
				t.Errorf("%s: no established connection %s → %s in ss -tnp of %s:\n%s", s.Name, e.From, e.To, fromIP, conns)
			}
			listen := run(toIP, "ss -ltnp")
			if !strings.Contains(listen, "0.0.0.0:"+toPort+" ") {
				t.Errorf("%s: %s does not listen on %s:\n%s", s.Name, toIP, toPort, listen)
			}
			if inbound := run(toIP, "ss -tnp"); !strings.Contains(inbound, e.To) {
				t.Errorf("%s: %s shows no inbound socket on %s", s.Name, toIP, e.To)
			}
			if toPort == "5432" || toPort == "3306" {
				dbUsers[e.To]++
			}
		}
	}
	isShared := false
	for _, n := range dbUsers {
		isShared = isShared || n >= 2
	}
	if shared && !isShared {
		t.Errorf("no database shared by two services: %v", dbUsers)
	}
	if deadEdges != 1 {
		t.Errorf("%d dead edges, want 1", deadEdges)
	}
}
