package lab_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/outpost-dev/outpost/libs/lab"
	"golang.org/x/crypto/ssh"
)

func TestLDAPDirectory(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.204.0/24", 60)
	m := l.Manifest()
	d := m.Directory
	srv := m.ByClass(lab.ClassLDAP)[0]
	cred := srv.Credentials.LDAP
	c, err := ldap.DialURL("ldap://" + srv.IP + ":389")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// anonymous: the root DSE only
	root, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)",
		[]string{"namingContexts", "supportedLDAPVersion", "vendorName"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if e := root.Entries[0]; e.GetAttributeValue("namingContexts") != d.BaseDN || e.GetAttributeValue("supportedLDAPVersion") != "3" || e.GetAttributeValue("vendorName") == "" {
		t.Errorf("root DSE: %+v", e.Attributes)
	}
	_, err = c.Search(ldap.NewSearchRequest(d.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(uid=*)", nil, nil))
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultInappropriateAuthentication) {
		t.Errorf("anonymous search: %v", err)
	}
	if err := c.Bind(cred.BindDN, "wrong"); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		t.Errorf("wrong password: %v", err)
	}
	if err := c.Bind(cred.BindDN, cred.Password); err != nil {
		t.Fatal(err)
	}
	search := func(base string, scope int, filter string, attrs ...string) []*ldap.Entry {
		t.Helper()
		r, err := c.Search(ldap.NewSearchRequest(base, scope, ldap.NeverDerefAliases, 0, 0, false, filter, attrs, nil))
		if err != nil {
			t.Fatalf("%s %s: %v", base, filter, err)
		}
		return r.Entries
	}
	users := search(d.BaseDN, ldap.ScopeWholeSubtree, "(objectClass=inetOrgPerson)", "uid", "mail", "memberOf")
	if len(users) != len(d.Users) {
		t.Fatalf("%d users, manifest %d", len(users), len(d.Users))
	}
	for i, u := range users {
		if u.DN != d.Users[i].DN || u.GetAttributeValue("mail") != d.Users[i].Mail || len(u.GetAttributeValues("memberOf")) != len(d.Users[i].MemberOf) {
			t.Errorf("user %d: %s %v, manifest %+v", i, u.DN, u.Attributes, d.Users[i])
		}
	}
	if one := search("ou=People,"+d.BaseDN, ldap.ScopeSingleLevel, "(objectClass=*)"); len(one) != len(d.Users) {
		t.Errorf("one-level under People: %d entries", len(one))
	}
	if base := search(d.Users[0].DN, ldap.ScopeBaseObject, "(objectClass=*)"); len(base) != 1 {
		t.Errorf("base search: %d entries", len(base))
	}
	for _, g := range d.Groups {
		members := search(d.BaseDN, ldap.ScopeWholeSubtree, "(&(objectClass=person)(memberOf="+g.DN+"))", "uid")
		if len(members) != len(g.Members) {
			t.Errorf("memberOf=%s: %d users, manifest %d", g.CN, len(members), len(g.Members))
		}
		grp := search(d.BaseDN, ldap.ScopeWholeSubtree, "(&(objectClass=groupOfNames)(cn="+g.CN+"))", "member")
		if len(grp) != 1 || len(grp[0].GetAttributeValues("member")) != len(g.Members) {
			t.Errorf("group %s: %v", g.CN, grp)
		}
	}
	u := d.Users[0]
	if got := search(d.BaseDN, ldap.ScopeWholeSubtree, "(|(uid="+u.UID+")(mail=nobody@example.invalid))"); len(got) != 1 {
		t.Errorf("or filter: %d entries", len(got))
	}
	if got := search(d.BaseDN, ldap.ScopeWholeSubtree, "(&(uid="+u.UID[:2]+"*)(!(uid="+u.UID+")))", "uid"); len(got) == 0 && strings.Count(strings.Join(uids(d), ","), u.UID[:2]) > 1 {
		t.Error("substring/not filter found nothing")
	}
	paged, err := c.SearchWithPaging(ldap.NewSearchRequest(d.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(uid=*)", []string{"uid"}, nil), 5)
	if err != nil || len(paged.Entries) != len(d.Users)+1 { // + the service account
		t.Errorf("paged search: %d entries, %v", len(paged.Entries), err)
	}
	if _, err := c.Search(ldap.NewSearchRequest("ou=Nope,"+d.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", nil, nil)); !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		t.Errorf("missing base: %v", err)
	}
	// StartTLS and LDAPS present the manifest's certificate
	fp := srv.Certificates[0].SHA256
	tc, err := ldap.DialURL("ldap://" + srv.IP + ":389")
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := tc.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Fatalf("StartTLS: %v", err)
	}
	if st, ok := tc.TLSConnectionState(); !ok || fingerprint(st) != fp {
		t.Error("StartTLS certificate is not the manifest's")
	}
	if err := tc.Bind(cred.BindDN, cred.Password); err != nil {
		t.Fatal(err)
	}
	sc, err := ldap.DialURL("ldaps://"+srv.IP+":636", ldap.DialWithTLSConfig(&tls.Config{InsecureSkipVerify: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Bind(cred.BindDN, cred.Password); err != nil {
		t.Fatalf("ldaps bind: %v", err)
	}
}

func uids(d *lab.Directory) []string {
	var out []string
	for _, u := range d.Users {
		out = append(out, u.UID)
	}
	return out
}

func fingerprint(st tls.ConnectionState) string {
	sum := sha256.Sum256(st.PeerCertificates[0].Raw)
	return hex.EncodeToString(sum[:])
}

var titleRE = regexp.MustCompile(`<title>([^<]*)</title>`)

func TestWebServers(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.205.0/24", 60)
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	seen := 0
	for _, h := range l.Manifest().Hosts {
		for _, w := range h.Web {
			seen++
			scheme := "http"
			if w.TLS {
				scheme = "https"
			}
			resp, err := client.Get(scheme + "://" + net.JoinHostPort(h.IP, itoa(w.Port)) + "/")
			if err != nil {
				t.Errorf("%s:%d: %v", h.IP, w.Port, err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			title := ""
			if mm := titleRE.FindSubmatch(bytes.ReplaceAll(body, []byte("TITLE>"), []byte("title>"))); mm != nil {
				title = string(mm[1])
			}
			if resp.StatusCode != w.Status || resp.Header.Get("Server") != w.Server || title != w.Title {
				t.Errorf("%s:%d: %d %q %q, manifest %+v", h.IP, w.Port, resp.StatusCode, resp.Header.Get("Server"), title, w)
			}
			if w.TLS {
				cert := resp.TLS.PeerCertificates[0]
				mc := h.Certificates[0]
				if !cert.NotAfter.Equal(mc.NotAfter) || fingerprint(*resp.TLS) != mc.SHA256 || cert.Subject.CommonName != mc.SubjectCN {
					t.Errorf("%s:%d: certificate %s %v, manifest %s %v", h.IP, w.Port, cert.Subject.CommonName, cert.NotAfter, mc.SubjectCN, mc.NotAfter)
				}
				// The lab's certificates are made relative to its reference day, so their state
				// is judged at that day too, never by the wall clock.
				expired := l.Manifest().ReferenceTime.After(cert.NotAfter)
				if expired != (mc.State == "expired") {
					t.Errorf("%s: certificate expired=%v but state %s", h.IP, expired, mc.State)
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal("no web services in the lab")
	}
}

func TestHostileHosts(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.206.0/24", 20, hostile)
	modes := map[string]lab.Host{}
	for _, h := range l.Manifest().Hosts {
		if h.Hostile {
			modes[h.HostileMode] = h
		}
	}
	if len(modes) != 3 {
		t.Fatalf("hostile modes: %v", modes)
	}
	dial := func(h lab.Host, port int) net.Conn {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h.IP, itoa(port)), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// stall: accepts, never answers
	c := dial(modes[lab.HostileStall], 22)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 10)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("stall: read %d bytes, %v", n, err)
	}
	// wrong protocol: an SSH client gets something that is not SSH
	_, err := ssh.Dial("tcp", modes[lab.HostileWrongProtocol].IP+":22", &ssh.ClientConfig{User: "x", HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 2 * time.Second})
	if err == nil {
		t.Error("ssh handshake with the wrong-protocol host succeeded")
	}
	c = dial(modes[lab.HostileWrongProtocol], 443)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "220 " {
		t.Errorf("wrong protocol: %q %v", b, err)
	}
	// stream: bytes without end
	c = dial(modes[lab.HostileStream], 80)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.CopyN(io.Discard, c, 4<<20); n != 4<<20 {
		t.Errorf("stream: %d bytes, %v", n, err)
	}
	// a stalled client connection does not hold up Close
	t0 := time.Now()
	l.Close()
	t.Logf("Close with stalled connections took %v", time.Since(t0))
}

// A lab of a thousand hosts starts and answers (used by benchmarks).
func TestLargeLab(t *testing.T) {
	if testing.Short() {
		t.Skip("large lab in -short mode")
	}
	t.Parallel()
	t0 := time.Now()
	l := startLab(t, "127.77.212.0/22", 1000)
	t.Logf("1000 hosts started in %v", time.Since(t0))
	m := l.Manifest()
	if len(m.Hosts) != 1000 || m.Hosts[999].IP != "127.77.215.232" {
		t.Fatalf("%d hosts, last %s", len(m.Hosts), m.Hosts[len(m.Hosts)-1].IP)
	}
	for i := 0; i < len(m.Hosts); i += 97 {
		for _, p := range m.Hosts[i].OpenTCP {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(m.Hosts[i].IP, itoa(p)), 2*time.Second)
			if err != nil {
				t.Errorf("%s:%d: %v", m.Hosts[i].IP, p, err)
				continue
			}
			c.Close()
		}
	}
}

// /flaky fails the first N requests of a key with 503 + Retry-After, then succeeds; keys
// count apart, across the lab's web servers, and FlakyHits reads the count.
func TestFlakyEndpoint(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.187.0/24", 24)
	var web []string
	for _, h := range l.Manifest().Hosts {
		for _, w := range h.Web {
			if !w.TLS && w.Port != 5985 && !h.Hostile {
				web = append(web, net.JoinHostPort(h.IP, itoa(w.Port)))
			}
		}
	}
	if len(web) < 2 {
		t.Fatalf("the lab has %d plain web servers, want 2", len(web))
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func(server, query string) (int, string, string) {
		t.Helper()
		resp, err := client.Get("http://" + server + "/flaky?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
	}
	for _, tc := range []struct {
		name, query string
		want        []int // statuses of consecutive requests, alternating servers
		retryAfter  string
	}{
		{"two failures", "key=a&fail=2", []int{503, 503, 200, 200}, "1"},
		{"other key counts apart", "key=b&fail=1&retry_after=0", []int{503, 200}, "0"},
		{"no failures", "key=c&fail=0", []int{200}, ""},
		{"missing key", "fail=2", []int{400}, ""},
		{"bad fail", "key=d&fail=x", []int{400}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, want := range tc.want {
				code, ra, body := get(web[i%2], tc.query)
				if code != want {
					t.Fatalf("request %d: %d %s, want %d", i+1, code, body, want)
				}
				if code == 503 && ra != tc.retryAfter {
					t.Errorf("request %d: Retry-After %q, want %q", i+1, ra, tc.retryAfter)
				}
				if code == 400 && !strings.Contains(body, "key=NAME") {
					t.Errorf("request %d: %q does not say what /flaky needs", i+1, body)
				}
			}
		})
	}
	for key, want := range map[string]int{"a": 4, "b": 2, "c": 1, "d": 0} {
		if n := l.FlakyHits(key); n != want {
			t.Errorf("FlakyHits(%s) = %d, want %d", key, n, want)
		}
	}
}
