package lab

import (
	"fmt"
	"slices"
	"strings"
)

// directory is the lab's LDAP tree, shared by every ldap_directory host.
type directory struct {
	baseDN       string
	bindDN       string
	bindPassword string
	entries      []*dirEntry
	byNDN        map[string]*dirEntry
	servers      []string
	users        []DirectoryUser
	groups       []DirectoryGroup
	ous          []string
}

type dirEntry struct {
	dn    string
	ndn   string // normalised: lower case, no blanks around separators
	attrs []dirAttr
}

type dirAttr struct {
	name string
	vals []string
}

func (e *dirEntry) get(name string) []string {
	for _, a := range e.attrs {
		if strings.EqualFold(a.name, name) {
			return a.vals
		}
	}
	return nil
}

// normDN lower-cases a DN and removes blanks around ',' and '='. The lab's
// values never contain escaped separators.
func normDN(dn string) string {
	parts := strings.Split(dn, ",")
	for i, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if ok {
			parts[i] = strings.ToLower(strings.TrimSpace(k)) + "=" + strings.ToLower(strings.TrimSpace(v))
		} else {
			parts[i] = strings.ToLower(strings.TrimSpace(p))
		}
	}
	if len(parts) == 1 && parts[0] == "" {
		return ""
	}
	return strings.Join(parts, ",")
}

func parentDN(ndn string) string {
	_, p, ok := strings.Cut(ndn, ",")
	if !ok {
		return ""
	}
	return p
}

func newDirectory(seed int64, hosts int, domain, org, bindPassword string) *directory {
	r := rng(seed, "directory", 0)
	labels := strings.Split(domain, ".")
	for i, l := range labels {
		labels[i] = "dc=" + l
	}
	base := strings.Join(labels, ",")
	d := &directory{baseDN: base, bindPassword: bindPassword, byNDN: map[string]*dirEntry{}}
	add := func(dn string, attrs ...dirAttr) *dirEntry {
		e := &dirEntry{dn: dn, ndn: normDN(dn), attrs: attrs}
		d.entries = append(d.entries, e)
		d.byNDN[e.ndn] = e
		return e
	}
	a := func(name string, vals ...string) dirAttr { return dirAttr{name, vals} }
	add(base, a("objectClass", "top", "domain"), a("dc", strings.Split(domain, ".")[0]), a("description", org))
	for _, ou := range []string{"People", "Groups", "ServiceAccounts"} {
		dn := "ou=" + ou + "," + base
		add(dn, a("objectClass", "top", "organizationalUnit"), a("ou", ou))
		d.ous = append(d.ous, dn)
	}
	d.bindDN = "uid=svc-outpost,ou=ServiceAccounts," + base
	add(d.bindDN, a("objectClass", "top", "account", "simpleSecurityObject"), a("uid", "svc-outpost"),
		a("description", "Outpost discovery and import (read-only)"), a("userPassword", "{SSHA}redacted"))

	n := min(max(12, 12+hosts/10), 400)
	groupNames := []string{"admins", "developers", "operations", "finance", "hr", "sales", "vpn-users", "all-staff"}
	deptGroup := map[string]string{"Engineering": "developers", "Operations": "operations", "Finance": "finance",
		"Human Resources": "hr", "Sales": "sales", "Security": "admins", "Support": "operations"}
	members := map[string][]string{}
	seen := map[string]bool{}
	for i := range n {
		first, last := pickOne(r, firstNames), pickOne(r, lastNames)
		uid := strings.ToLower(first[:1] + last)
		for k := 2; seen[uid]; k++ {
			uid = strings.ToLower(first[:1]+last) + fmt.Sprint(k)
		}
		seen[uid] = true
		dept := pickOne(r, departments)
		title := pickOne(r, jobTitles)
		dn := "uid=" + uid + ",ou=People," + base
		groups := []string{"all-staff", deptGroup[dept]}
		if r.IntN(100) < 35 {
			groups = append(groups, "vpn-users")
		}
		if r.IntN(100) < 8 || (i == 0) {
			groups = append(groups, "admins")
		}
		slices.Sort(groups)
		groups = slices.Compact(groups)
		var memberOf []string
		for _, g := range groups {
			gdn := "cn=" + g + ",ou=Groups," + base
			memberOf = append(memberOf, gdn)
			members[g] = append(members[g], dn)
		}
		mail := strings.ToLower(first+"."+last) + "@" + domain
		if seen["mail:"+mail] {
			mail = uid + "@" + domain
		}
		seen["mail:"+mail] = true
		uidNumber := 10000 + i
		add(dn,
			a("objectClass", "top", "person", "organizationalPerson", "inetOrgPerson", "posixAccount"),
			a("uid", uid), a("cn", first+" "+last), a("sn", last), a("givenName", first), a("displayName", first+" "+last),
			a("mail", mail), a("title", title), a("departmentNumber", dept), a("employeeNumber", fmt.Sprint(4000+i)),
			a("telephoneNumber", fmt.Sprintf("+49 69 %04d %03d", 1000+r.IntN(9000), r.IntN(1000))),
			a("uidNumber", fmt.Sprint(uidNumber)), a("gidNumber", "10000"), a("homeDirectory", "/home/"+uid),
			a("loginShell", "/bin/bash"), a("memberOf", memberOf...))
		d.users = append(d.users, DirectoryUser{DN: dn, UID: uid, CN: first + " " + last, Mail: mail, Department: dept,
			Title: title, UIDNumber: uidNumber, MemberOf: memberOf})
	}
	for i, g := range groupNames {
		dn := "cn=" + g + ",ou=Groups," + base
		m := members[g]
		if len(m) == 0 {
			continue // groupOfNames needs a member
		}
		add(dn, a("objectClass", "top", "groupOfNames"), a("cn", g), a("description", g+" of "+org),
			a("gidNumber", fmt.Sprint(20000+i)), a("member", m...))
		d.groups = append(d.groups, DirectoryGroup{DN: dn, CN: g, Members: m})
	}
	// memberOf must only name groups that exist
	for _, e := range d.entries {
		for i := range e.attrs {
			if e.attrs[i].name == "memberOf" {
				e.attrs[i].vals = slices.DeleteFunc(e.attrs[i].vals, func(g string) bool { return d.byNDN[normDN(g)] == nil })
			}
		}
	}
	return d
}

func (d *directory) manifest() *Directory {
	return &Directory{BaseDN: d.baseDN, Servers: d.servers, BindDN: d.bindDN, OUs: d.ous, Users: d.users, Groups: d.groups}
}
