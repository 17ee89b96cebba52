package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/lab"
)

// directoryUser and directoryGroup are what a directory holds, to compare with the CMDB.
type directoryGroup struct {
	dn, cn  string
	members []string
}

// ldapImport reads a directory's users (people OUs, in order) and its groups' members
// through a site's bridge and checks users, groups and every membership in the CMDB.
func ldapImport(t *testing.T, h *testHub, site, server string, port int, bindDN, password string, peopleOUs []string, groupsOU string,
	users int, groups []directoryGroup) {
	t.Helper()
	h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": site + "-bind", "type": "ldap", "site": site,
		"username": bindDN, "secret": password, "allow_insecure": true}, nil)
	common := []string{"--site", site, "--type", "ldap", "--credential", site + "-bind", "--param", "target=" + server,
		"--param", fmt.Sprint("port=", port), "--param", "security=none", "--param", "page_size=7"}
	people := append([]string{"import", "source", "add", site + "-people"}, common...)
	for i, ou := range peopleOUs {
		people = append(people, "--param", fmt.Sprintf("ou.%d.base=%s", i+1, ou),
			"--param", fmt.Sprintf("ou.%d.filter=(|(objectClass=inetOrgPerson)(objectClass=account))", i+1),
			"--param", fmt.Sprintf("ou.%d.attributes=uid,cn,mail,title,departmentNumber", i+1))
	}
	if out, err := h.outpost(t, people...); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	grp := append([]string{"import", "source", "add", site + "-groups"}, common...)
	grp = append(grp, "--param", "base="+groupsOU, "--param", "filter=(objectClass=groupOfNames)", "--param", "attributes=cn,member",
		"--param", "explode=member")
	if out, err := h.outpost(t, grp...); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	dir := t.TempDir()
	usersMap := filepath.Join(dir, "users.yaml")
	writeFile(t, usersMap, `name: directory-users
source: directory
target: {class: user}
coalesce: [dn]
fields:
  dn: 'lower(row.dn)'
  name: 'row.cn ?? row.uid'
  uid: 'row.uid'
  email: 'row.mail'
  title: 'row.title'
  department: 'row.departmentNumber'
`)
	membersMap := filepath.Join(dir, "members.yaml")
	writeFile(t, membersMap, `name: directory-memberships
source: directory
target: {class: user}
coalesce: [dn]
fields:
  dn: 'lower(row.member)'
relations:
  - {type: member_of, to: {class: group, fields: {dn: 'lower(row.dn)', name: 'row.cn'}}}
`)
	memberships := 0
	for _, g := range groups {
		memberships += len(g.members)
	}
	r := h.sourceRun(t, site+"-people", usersMap)
	if r.State != api.StateCompleted || r.Counters != (api.Counters{Staged: int64(users), Inserted: int64(users)}) {
		t.Fatalf("people: %s %s %+v, want %d inserted", r.State, r.Reason, r.Counters, users)
	}
	r = h.sourceRun(t, site+"-groups", membersMap)
	if r.State != api.StateCompleted || r.Counters.Staged != int64(memberships) || r.Counters.Inserted != 0 || r.Counters.Error+r.Counters.Skipped != 0 {
		t.Fatalf("memberships: %s %s %+v, want %d rows, every member an existing user", r.State, r.Reason, r.Counters, memberships)
	}
	if n := ciCountCLI(t, h, "user"); n != users {
		t.Errorf("user CIs: %d, want %d", n, users)
	}
	if n := ciCountCLI(t, h, "group"); n != len(groups) {
		t.Errorf("group CIs: %d, want %d", n, len(groups))
	}
	for _, g := range groups {
		out, err := h.outpost(t, "ci", "ls", "--class", "group", "--search", g.cn, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var cis []struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(out, &cis); err != nil || len(cis) != 1 {
			t.Fatalf("group %s: %v %s", g.cn, err, out)
		}
		out, err = h.outpost(t, "ci", "rel", cis[0].ID, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(out), `"member_of"`); n != len(g.members) {
			t.Errorf("group %s: %d member_of relations, want %d", g.cn, n, len(g.members))
		}
	}
	// again: nothing new
	for name, m := range map[string]string{site + "-people": usersMap, site + "-groups": membersMap} {
		if r := h.sourceRun(t, name, m); r.State != api.StateCompleted || r.Counters.Inserted != 0 || r.Counters.Updated != 0 || r.Counters.Error != 0 {
			t.Errorf("%s again: %s %s %+v, want all unchanged", name, r.State, r.Reason, r.Counters)
		}
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The lab's directory through a site's bridge: users of two OUs, groups and memberships.
func TestImportLDAPFromTheLab(t *testing.T) {
	t.Parallel()
	const cidr = "127.77.131.0/24"
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 30, Seed: 13})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	defer l.Close()
	m := l.Manifest()
	d := m.Directory
	if d == nil || len(d.Servers) == 0 {
		t.Fatal("the lab has no directory")
	}
	var password string
	for _, hst := range m.Hosts {
		if c := hst.Credentials.LDAP; c != nil {
			password = c.Password
		}
	}
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "corp", cidr, true)
	startBridge(t, h, "corp", "corp-br1", tok)
	h.waitStatus(t, "corp-br1", "up")
	var groups []directoryGroup
	for _, g := range d.Groups {
		groups = append(groups, directoryGroup{dn: g.DN, cn: g.CN, members: g.Members})
	}
	// People and ServiceAccounts (the bind account): two OUs, read in that order
	ldapImport(t, h, "corp", d.Servers[0], 389, d.BindDN, password,
		[]string{"ou=People," + d.BaseDN, "ou=ServiceAccounts," + d.BaseDN}, "ou=Groups,"+d.BaseDN, len(d.Users)+1, groups)
}

// The same against a real OpenLDAP slapd (Debian's) started by the test on 127.0.0.1.
func TestImportLDAPFromSlapd(t *testing.T) {
	t.Parallel()
	slapd, err := exec.LookPath("slapd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/slapd"); serr != nil {
			t.Skip("slapd is not installed (Debian: apt-get install slapd ldap-utils; .ci/run installs it)")
		}
		slapd = "/usr/sbin/slapd"
	}
	const base = "dc=outpost,dc=test"
	const staff, contractors = 260, 45
	dir := t.TempDir()
	var ldif strings.Builder
	entry := func(lines ...string) { ldif.WriteString(strings.Join(lines, "\n") + "\n\n") }
	entry("dn: "+base, "objectClass: dcObject", "objectClass: organization", "o: Outpost test", "dc: outpost")
	for _, ou := range []string{"Staff", "Contractors", "Groups"} {
		entry("dn: ou="+ou+","+base, "objectClass: organizationalUnit", "ou: "+ou)
	}
	groups := map[string]*directoryGroup{}
	for _, g := range []string{"all-staff", "engineering", "finance", "vpn-users", "contractors"} {
		groups[g] = &directoryGroup{dn: "cn=" + g + ",ou=Groups," + base, cn: g}
	}
	addUser := func(ou, uid, cn string, in ...string) {
		dn := "uid=" + uid + ",ou=" + ou + "," + base
		entry("dn: "+dn, "objectClass: inetOrgPerson", "uid: "+uid, "cn: "+cn, "sn: "+uid, "mail: "+uid+"@outpost.test", "title: Engineer")
		for _, g := range in {
			groups[g].members = append(groups[g].members, dn)
		}
	}
	for i := range staff {
		in := []string{"all-staff", []string{"engineering", "finance"}[i%2]}
		if i%3 == 0 {
			in = append(in, "vpn-users")
		}
		addUser("Staff", fmt.Sprintf("s%04d", i), fmt.Sprintf("Staff Member %d", i), in...)
	}
	for i := range contractors {
		addUser("Contractors", fmt.Sprintf("c%04d", i), fmt.Sprintf("Contractor %d", i), "contractors", "vpn-users")
	}
	var all []directoryGroup
	for _, g := range []string{"all-staff", "engineering", "finance", "vpn-users", "contractors"} {
		lines := []string{"dn: " + groups[g].dn, "objectClass: groupOfNames", "cn: " + g}
		for _, m := range groups[g].members {
			lines = append(lines, "member: "+m)
		}
		entry(lines...)
		all = append(all, *groups[g])
	}
	port := freePort(t)
	conf := filepath.Join(dir, "slapd.conf")
	writeFile(t, conf, fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %[1]s/slapd.pid
sizelimit unlimited
database mdb
suffix "%[2]s"
rootdn "cn=admin,%[2]s"
rootpw slapd-test-secret
directory %[1]s/db
maxsize 104857600
`, dir, base))
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "data.ldif"), ldif.String())
	if out, err := exec.Command(filepath.Join(filepath.Dir(slapd), "slapadd"), "-f", conf, "-l", filepath.Join(dir, "data.ldif")).CombinedOutput(); err != nil {
		t.Fatalf("slapadd: %v: %s", err, out)
	}
	cmd := exec.Command(slapd, "-f", conf, "-h", fmt.Sprintf("ldap://127.0.0.1:%d/", port), "-d", "0")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("slapd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("slapd log:\n%s", tail(logs.String(), 30))
		}
	})
	eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err
	})

	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "hq", "127.0.0.1/32", true)
	startBridge(t, h, "hq", "hq-br1", tok)
	h.waitStatus(t, "hq-br1", "up")
	ldapImport(t, h, "hq", "127.0.0.1", port, "cn=admin,"+base, "slapd-test-secret",
		[]string{"ou=Staff," + base, "ou=Contractors," + base}, "ou=Groups,"+base, staff+contractors, all)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
