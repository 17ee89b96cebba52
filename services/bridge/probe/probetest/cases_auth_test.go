package probetest_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/libs/probes/sshexec"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/probetest"
)

// --- ssh_exec ---

// sshResult is what the hub reads (the contract in libs).
type sshResult = sshexec.Result

// osRelease reads NAME and VERSION_ID from /etc/os-release as a test would by hand.
func osRelease(s string) (name, version string) {
	for _, l := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(l, "=")
		v = strings.Trim(v, `"`)
		switch k {
		case "NAME":
			name = v
		case "VERSION_ID":
			version = v
		}
	}
	return
}

func sshCases(t *testing.T) []probetest.Case {
	lx := linuxHost(t)
	good := sshCred("linux-"+lx.Credentials.SSH.Username, lx.Credentials.SSH.Username, lx.Credentials.SSH.Password)
	bad := sshCred("wrong-password", lx.Credentials.SSH.Username, "not-"+lx.Credentials.SSH.Password)
	key := probe.Credential{Name: "deploy-key", Type: "ssh", Username: lx.Credentials.SSH.Username, Fields: map[string]string{"private_key": env.sshKey}}
	// seq 1 100000: the exact size of its output is known
	seqSize := 0
	for i := 1; i <= 100000; i++ {
		seqSize += len(strconv.Itoa(i)) + 1
	}
	secrets := append(labSecrets(), env.sshKey[40:80])
	return []probetest.Case{
		{Name: probetest.Success, Secrets: secrets, Req: req(lx.IP, map[string]any{"commands": []any{"uname -a", "cat /etc/os-release", map[string]any{"cmd": "sleep 5", "timeout": "300ms"}, "exit 3", "nosuchcommand"}}, bad, good),
			Check: func(t *testing.T, o probetest.Outcome) {
				r := probetest.Decode[sshResult](t, o.Data)
				eq(t, "credential that worked", r.Credential, good.Name)
				eq(t, "failed credentials", fmt.Sprint(r.FailedCredentials), "[wrong-password]")
				eq(t, "host key", r.HostKey, lx.SSHHostKey)
				if len(r.Outputs) != 5 {
					t.Fatalf("%d outputs, want 5", len(r.Outputs))
				}
				if u := r.Outputs[0]; !strings.Contains(u.Stdout.Text, lx.Kernel) || !strings.HasPrefix(u.Stdout.Text, "Linux ") || *u.ExitCode != 0 {
					t.Errorf("uname -a: %q (exit %v), want Linux with kernel %s", u.Stdout.Text, u.ExitCode, lx.Kernel)
				}
				name, version := osRelease(r.Outputs[1].Stdout.Text)
				eq(t, "os-release NAME", name, lx.OS)
				eq(t, "os-release VERSION_ID", version, lx.OSVersion)
				if s := r.Outputs[2]; !s.TimedOut || s.ExitCode != nil {
					t.Errorf("sleep 5 with a 300ms timeout: timed out %v, exit %v", s.TimedOut, s.ExitCode)
				}
				if e := r.Outputs[3].ExitCode; e == nil || *e != 3 {
					t.Errorf("exit 3: exit code %v", e)
				}
				if n := r.Outputs[4]; n.ExitCode == nil || *n.ExitCode != 127 || !strings.Contains(n.Stderr.Text, "command not found") {
					t.Errorf("unknown command: exit %v, stderr %q", n.ExitCode, n.Stderr.Text)
				}
			}},
		{Name: probetest.Success + "/public-key", Secrets: secrets, Req: req(lx.IP, map[string]any{"commands": []string{"hostname"}}, key),
			Check: func(t *testing.T, o probetest.Outcome) {
				r := probetest.Decode[sshResult](t, o.Data)
				eq(t, "credential", r.Credential, "deploy-key")
				eq(t, "hostname", strings.TrimSpace(r.Outputs[0].Stdout.Text), lx.Name)
			}},
		{Name: probetest.Success + "/pinned-host-key-mismatch", Req: req(lx.IP, map[string]any{"commands": []string{"id"}, "host_key": "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, good),
			WantCode: sshexec.CodeHostKeyMismatch, Secrets: secrets},
		{Name: probetest.Success + "/pinned-host-key", Secrets: secrets, Req: req(lx.IP, map[string]any{"commands": []string{"id"}, "host_key": lx.SSHHostKey}, good),
			Check: func(t *testing.T, o probetest.Outcome) {
				eq(t, "host key", probetest.Decode[sshResult](t, o.Data).HostKey, lx.SSHHostKey)
			}},
		{Name: probetest.Success + "/known-host-key", Secrets: secrets, Req: req(lx.IP, map[string]any{"commands": []string{"id"}, "known_host_key": lx.SSHHostKey}, good),
			Check: func(t *testing.T, o probetest.Outcome) {
				eq(t, "credential", probetest.Decode[sshResult](t, o.Data).Credential, good.Name)
			}},
		// the hub recorded another key at first use: refused before any credential, saying both keys and what to do
		{Name: "refused/host-key-changed", Secrets: secrets, Req: req(lx.IP, map[string]any{"commands": []string{"id"}, "known_host_key": "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, good),
			WantCode: sshexec.CodeHostKeyMismatch, Check: func(t *testing.T, o probetest.Outcome) {
				want := fmt.Sprintf("host key for %s changed from SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA to %s: no credential was sent; if the host was rebuilt, run `outpost hostkeys forget %s`", lx.IP, lx.SSHHostKey, lx.IP)
				if o.Err == nil || !strings.Contains(o.Err.Error(), want) {
					t.Errorf("error %v, want %q", o.Err, want)
				}
				eq(t, "host key seen, in the result", probetest.Decode[sshResult](t, o.Data).HostKey, lx.SSHHostKey)
				if r := probetest.Decode[sshResult](t, o.Data); r.Credential != "" || len(r.FailedCredentials) != 0 {
					t.Errorf("a credential was tried: %+v", r)
				}
			}},
		{Name: "refused/http-credential", Secrets: secrets, Req: req(lx.IP, map[string]any{"commands": []string{"id"}}, probe.Credential{Name: "api", Type: "http", Secret: "api-Secret-1"}),
			WantCode: probe.CodeDenied, NoDial: true, Check: wantErr("ssh_exec takes only credentials of type ssh")},
		{Name: probetest.BadCreds, Secrets: secrets, Req: req(lx.IP, map[string]any{"commands": []string{"id"}}, bad, sshCred("other", "nobody", "x-pw-1234")), WantCode: probe.CodeAuth,
			Check: func(t *testing.T, o probetest.Outcome) {
				if !strings.Contains(o.Err.Error(), "wrong-password, other") {
					t.Errorf("error %q does not name the refused credentials", o.Err)
				}
				// readers learn which credentials failed from the data, not the message
				if r := probetest.Decode[sshResult](t, o.Data); strings.Join(r.FailedCredentials, ",") != "wrong-password,other" || r.Credential != "" {
					t.Errorf("result: failed %v, worked %q; want both refused credentials and none that worked", r.FailedCredentials, r.Credential)
				}
			}},
		{Name: probetest.Stalled, Req: req(stall(t), map[string]any{"commands": []string{"id"}, "connect_timeout": "500ms"}, good), WantCode: probe.CodeTimeout, Secrets: secrets},
		{Name: probetest.WrongProtocol, Req: req(wrong(t), map[string]any{"commands": []string{"id"}}, good), WantCode: probe.CodeProtocol, Secrets: secrets},
		{Name: probetest.Cancel, Req: req(lx.IP, map[string]any{"commands": []string{"sleep 30"}}, good), CancelAfter: 500 * time.Millisecond, WantCode: probe.CodeCanceled, Secrets: secrets},
		{Name: probetest.Oversize, Req: req(lx.IP, map[string]any{"commands": []string{"seq 1 100000"}, "max_output": 1000}, good), Secrets: secrets,
			Check: func(t *testing.T, o probetest.Outcome) {
				out := probetest.Decode[sshResult](t, o.Data).Outputs[0].Stdout
				if !out.Truncated || len(out.Text) != 1000 || out.Size != int64(seqSize) || out.SizeAtLeast {
					t.Errorf("seq: truncated %v, %d bytes kept, size %d (at least %v); want 1000 kept of exactly %d",
						out.Truncated, len(out.Text), out.Size, out.SizeAtLeast, seqSize)
				}
			}},
		{Name: "bad_params", Req: req(lx.IP, map[string]any{"commands": []any{map[string]any{"cmd": "id", "timeout": "forever"}}}, good), WantCode: probe.CodeBadParams},
		deny(t, lx.IP, map[string]any{"commands": []string{"id"}}, good),
	}
}

// --- SNMP ---

func community(name, c string) probe.Credential {
	return probe.Credential{Name: name, Type: "snmp", Secret: c}
}

func v3cred(name string, s *lab.SNMPCredential, authPw string) probe.Credential {
	return probe.Credential{Name: name, Type: "snmpv3", Username: s.Username, Secret: authPw,
		Fields: map[string]string{"auth_protocol": s.AuthProtocol, "priv_protocol": s.PrivProtocol, "priv_password": s.PrivPassword}}
}

type snmpValue struct {
	OID      string `json:"oid"`
	Type     string `json:"type"`
	Value    any    `json:"value"`
	Encoding string `json:"encoding"`
}

type snmpResult struct {
	Version           string      `json:"version"`
	Credential        string      `json:"credential"`
	FailedCredentials []string    `json:"failed_credentials"`
	Values            []snmpValue `json:"values"`
	Rows              int         `json:"rows"`
	Truncated         bool        `json:"truncated"`
	Roots             []struct {
		OID  string `json:"oid"`
		Rows int    `json:"rows"`
	} `json:"roots"`
}

// fast keeps the silent cases short: a wrong community gets no answer at all.
func fast(p map[string]any) map[string]any {
	p["timeout"], p["retries"] = "300ms", 0
	return p
}

// answered is for cases the agent does answer (a v3 report for a wrong password): a roomy
// timeout, so a loaded machine cannot turn the refusal into a timeout; the answer comes at once.
func answered(p map[string]any) map[string]any {
	p["timeout"], p["retries"] = "5s", 0
	return p
}

func snmpGetCases(t *testing.T) []probetest.Case {
	v2, v3 := snmpHost(t, false), snmpHost(t, true)
	system := []string{"1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.2.1.0"}
	checkSystem := func(h lab.Host, cred, version string) func(t *testing.T, o probetest.Outcome) {
		return func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[snmpResult](t, o.Data)
			eq(t, "credential", r.Credential, cred)
			eq(t, "version", r.Version, version)
			if len(r.Values) != len(system) {
				t.Fatalf("%d values, want %d", len(r.Values), len(system))
			}
			eq(t, "sysDescr", r.Values[0].Value, any(h.SysDescr))
			eq(t, "sysObjectID", r.Values[1].Value, any(h.SysObjectID))
			eq(t, "sysUpTime type", r.Values[2].Type, "timeticks")
			eq(t, "ifNumber", r.Values[4].Value, any(float64(h.InterfaceCount)))
		}
	}
	secrets := labSecrets()
	return []probetest.Case{
		{Name: probetest.Success + "/v2c", Secrets: secrets, Req: req(v2.IP, fast(map[string]any{"oids": system}), community("wrong", "public-nope"), community("site-ro", v2.Credentials.SNMP.Community)),
			Check: func(t *testing.T, o probetest.Outcome) {
				checkSystem(v2, "site-ro", "2c")(t, o)
				eq(t, "failed", fmt.Sprint(probetest.Decode[snmpResult](t, o.Data).FailedCredentials), "[wrong]")
			}},
		{Name: probetest.Success + "/v1", Secrets: secrets, Req: req(v2.IP, fast(map[string]any{"oids": system, "version": "1"}), probe.Credential{Name: "v1", Type: "snmp", Secret: v2.Credentials.SNMP.Community, Fields: map[string]string{"version": "1"}}),
			Check: checkSystem(v2, "v1", "1")},
		{Name: probetest.Success + "/v3", Secrets: secrets, Req: req(v3.IP, fast(map[string]any{"oids": system}), v3cred("v3-authpriv", v3.Credentials.SNMP, v3.Credentials.SNMP.AuthPassword)),
			Check: checkSystem(v3, "v3-authpriv", "3")},
		{Name: probetest.BadCreds, Secrets: secrets, Req: req(v3.IP, answered(map[string]any{"oids": system}), v3cred("v3-wrong", v3.Credentials.SNMP, "wrong-auth-password")), WantCode: probe.CodeAuth},
		// v1/v2c agents say nothing to a wrong community: that is all a prober can know
		{Name: probetest.BadCreds + "/community", Secrets: secrets, Req: req(v2.IP, fast(map[string]any{"oids": system}), community("wrong", "public-nope")), WantCode: probe.CodeTimeout},
		{Name: probetest.Stalled, Req: req(stall(t), fast(map[string]any{"oids": system}), community("c", "public")), WantCode: probe.CodeTimeout},
		{Name: probetest.WrongProtocol, Req: req(wrong(t), fast(map[string]any{"oids": system}), community("c", "public")), WantCode: probe.CodeTimeout + "|" + probe.CodeProtocol},
		{Name: probetest.Cancel, Req: req(stall(t), map[string]any{"oids": system, "timeout": "20s"}, community("c", "public")), CancelAfter: 200 * time.Millisecond, WantCode: probe.CodeCanceled},
		// the stream host floods every request with oversized garbage datagrams
		{Name: probetest.Oversize, Req: req(stream(t), fast(map[string]any{"oids": system}), community("c", "public")), WantCode: probe.CodeTimeout + "|" + probe.CodeProtocol},
		{Name: "bad_params", Req: req(v2.IP, map[string]any{"oids": []string{"sysDescr.0"}}, community("c", "public")), WantCode: probe.CodeBadParams},
		deny(t, v2.IP, map[string]any{"oids": system}, community("c", "public")),
		{Name: "refused/ssh-credential", Req: req(v2.IP, fast(map[string]any{"oids": system}), sshCred("prod-ssh", "root", "Sup3r-Secret-SSH-pw")),
			WantCode: probe.CodeDenied, NoDial: true, Check: wantErr("snmp_get takes only credentials of type snmp or snmpv3")},
	}
}

func walkValues(t *testing.T, o probetest.Outcome) []snmpValue {
	var out []snmpValue
	for _, c := range o.Chunks {
		out = append(out, probetest.Decode[struct {
			Values []snmpValue `json:"values"`
		}](t, c).Values...)
	}
	return out
}

func snmpWalkCases(t *testing.T) []probetest.Case {
	v2, v3 := snmpHost(t, false), snmpHost(t, true)
	ifIndex, ifPhys := "1.3.6.1.2.1.2.2.1.1", "1.3.6.1.2.1.2.2.1.6"
	checkIfTable := func(h lab.Host) func(t *testing.T, o probetest.Outcome) {
		return func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[snmpResult](t, o.Data)
			vals := walkValues(t, o)
			eq(t, "ifTable rows (ifIndex)", r.Roots[0].Rows, h.InterfaceCount)
			eq(t, "ifTable rows (ifIndex)", r.Roots[0].Rows, len(h.Interfaces))
			var macs []string
			for _, v := range vals {
				if strings.HasPrefix(v.OID, "."+ifPhys+".") && v.Encoding == "mac" {
					macs = append(macs, v.Value.(string))
				}
			}
			var want []string
			for _, f := range h.Interfaces {
				if f.MAC != "" {
					want = append(want, f.MAC)
				}
			}
			slices.Sort(macs)
			slices.Sort(want)
			eq(t, "ifPhysAddress MACs", fmt.Sprint(macs), fmt.Sprint(want))
			eq(t, "rows streamed", len(vals), r.Rows)
		}
	}
	secrets := labSecrets()
	return []probetest.Case{
		{Name: probetest.Success + "/v2c-bulk", Secrets: secrets, Req: req(v2.IP, fast(map[string]any{"oids": []string{ifIndex, ifPhys}, "page_size": 7}), community("c", v2.Credentials.SNMP.Community)),
			Check: checkIfTable(v2)},
		{Name: probetest.Success + "/v1-getnext", Secrets: secrets, Req: req(v2.IP, fast(map[string]any{"oids": []string{ifIndex, ifPhys}, "version": "1"}), community("c", v2.Credentials.SNMP.Community)),
			Check: checkIfTable(v2)},
		{Name: probetest.Success + "/v3-bulk", Secrets: secrets, Req: req(v3.IP, fast(map[string]any{"oids": []string{ifIndex, ifPhys}}), v3cred("v3", v3.Credentials.SNMP, v3.Credentials.SNMP.AuthPassword)),
			Check: checkIfTable(v3)},
		{Name: probetest.BadCreds, Secrets: secrets, Req: req(v3.IP, answered(map[string]any{"oids": []string{ifIndex}}), v3cred("v3-wrong", v3.Credentials.SNMP, "wrong-auth-password")), WantCode: probe.CodeAuth},
		{Name: probetest.Stalled, Req: req(stall(t), fast(map[string]any{"oids": []string{ifIndex}}), community("c", "public")), WantCode: probe.CodeTimeout},
		{Name: probetest.WrongProtocol, Req: req(wrong(t), fast(map[string]any{"oids": []string{ifIndex}}), community("c", "public")), WantCode: probe.CodeTimeout + "|" + probe.CodeProtocol},
		{Name: probetest.Cancel, Req: req(stall(t), map[string]any{"oids": []string{ifIndex}, "timeout": "20s"}, community("c", "public")), CancelAfter: 200 * time.Millisecond, WantCode: probe.CodeCanceled},
		{Name: probetest.Oversize, Secrets: secrets, Req: req(v2.IP, fast(map[string]any{"oids": []string{"1.3.6.1.2.1"}, "max_rows": 5}), community("c", v2.Credentials.SNMP.Community)),
			Check: func(t *testing.T, o probetest.Outcome) {
				r := probetest.Decode[snmpResult](t, o.Data)
				if !r.Truncated || r.Rows != 5 || len(walkValues(t, o)) != 5 {
					t.Errorf("truncated %v rows %d streamed %d, want truncated at 5", r.Truncated, r.Rows, len(walkValues(t, o)))
				}
			}},
		{Name: probetest.Oversize + "/no-stream", NoEmit: true, MaxOutput: 4096, Secrets: secrets, Req: req(v2.IP, fast(map[string]any{"oids": []string{"1.3.6.1.2.1"}}), community("c", v2.Credentials.SNMP.Community)),
			Check: func(t *testing.T, o probetest.Outcome) {
				if r := probetest.Decode[snmpResult](t, o.Data); !r.Truncated {
					t.Errorf("a walk beyond MaxOutput without a stream is not truncated (%d rows)", r.Rows)
				}
			}},
		deny(t, v2.IP, map[string]any{"oids": []string{ifIndex}}, community("c", "public")),
	}
}

// --- ldap_search ---

type ldapResult struct {
	Credential        string   `json:"credential"`
	FailedCredentials []string `json:"failed_credentials"`
	BaseDN            string   `json:"base_dn"`
	Entries           int      `json:"entries"`
	Pages             int      `json:"pages"`
	Truncated         bool     `json:"truncated"`
	Security          string   `json:"security"`
	TLS               *struct {
		Verified    bool `json:"verified"`
		Certificate struct {
			SHA256 string `json:"sha256"`
		} `json:"certificate"`
	} `json:"tls"`
	Results []ldapEntry `json:"results"`
}

type ldapEntry struct {
	DN         string              `json:"dn"`
	Attributes map[string][]string `json:"attributes"`
}

func ldapEntries(t *testing.T, o probetest.Outcome) []ldapEntry {
	var out []ldapEntry
	for _, c := range o.Chunks {
		out = append(out, probetest.Decode[struct {
			Entries []ldapEntry `json:"entries"`
		}](t, c).Entries...)
	}
	return out
}

func ldapCases(t *testing.T) []probetest.Case {
	ld := ldapHost(t)
	dir := env.m.Directory
	good := probe.Credential{Name: "ldap-reader", Type: "ldap", Username: ld.Credentials.LDAP.BindDN, Secret: ld.Credentials.LDAP.Password}
	bad := probe.Credential{Name: "ldap-wrong", Type: "ldap", Username: ld.Credentials.LDAP.BindDN, Secret: "wrong-" + ld.Credentials.LDAP.Password}
	// the directory's certificate is trusted as the CA, and checked at a time it is valid
	caPEM, at := ldapCertificate(t, ld)
	users := map[string]any{"base_dn": dir.BaseDN, "filter": "(objectClass=inetOrgPerson)", "attributes": []string{"uid", "cn", "mail"}, "page_size": 7, "ca_pem": caPEM}
	plain := map[string]any{"base_dn": dir.BaseDN, "filter": "(objectClass=inetOrgPerson)", "attributes": []string{"uid", "cn", "mail"}, "page_size": 7}
	insecure := good
	insecure.Name, insecure.AllowInsecure = "ldap-insecure", true
	checkUsers := func(t *testing.T, o probetest.Outcome) {
		r := probetest.Decode[ldapResult](t, o.Data)
		got := map[string]ldapEntry{}
		for _, e := range ldapEntries(t, o) {
			got[strings.ToLower(e.DN)] = e
		}
		eq(t, "users", len(got), len(dir.Users))
		eq(t, "entries", r.Entries, len(dir.Users))
		for _, u := range dir.Users {
			e, ok := got[strings.ToLower(u.DN)]
			if !ok {
				t.Errorf("user %s missing", u.DN)
				continue
			}
			eq(t, u.DN+" uid", fmt.Sprint(e.Attributes["uid"]), fmt.Sprint([]string{u.UID}))
			eq(t, u.DN+" mail", fmt.Sprint(e.Attributes["mail"]), fmt.Sprint([]string{u.Mail}))
		}
		if want := (len(dir.Users) + 6) / 7; r.Pages < want {
			t.Errorf("%d pages, want at least %d with page_size 7", r.Pages, want)
		}
	}
	secrets := labSecrets()
	cases := []probetest.Case{
		{Name: probetest.Success, Secrets: secrets, Req: req(ld.IP, users, bad, good), Check: func(t *testing.T, o probetest.Outcome) {
			checkUsers(t, o)
			r := probetest.Decode[ldapResult](t, o.Data)
			eq(t, "credential", r.Credential, good.Name)
			eq(t, "failed", fmt.Sprint(r.FailedCredentials), "[ldap-wrong]")
		}},
		{Name: probetest.Success + "/ldaps", Secrets: secrets, Req: req(ld.IP, merge(users, map[string]any{"port": 636}), good), Check: func(t *testing.T, o probetest.Outcome) {
			checkUsers(t, o)
			eq(t, "certificate", probetest.Decode[ldapResult](t, o.Data).TLS.Certificate.SHA256, ld.Certificates[0].SHA256)
		}},
		{Name: probetest.Success + "/starttls", Secrets: secrets, Req: req(ld.IP, merge(users, map[string]any{"security": "starttls"}), good), Check: func(t *testing.T, o probetest.Outcome) {
			checkUsers(t, o)
			eq(t, "certificate", probetest.Decode[ldapResult](t, o.Data).TLS.Certificate.SHA256, ld.Certificates[0].SHA256)
		}},
		{Name: probetest.Success + "/root-dse", NoEmit: true, Req: req(ld.IP, map[string]any{"base_dn": "", "scope": "base"}), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[ldapResult](t, o.Data)
			if len(r.Results) != 1 || fmt.Sprint(r.Results[0].Attributes["namingContexts"]) != fmt.Sprint([]string{dir.BaseDN}) {
				t.Errorf("root DSE %+v, want namingContexts %s", r.Results, dir.BaseDN)
			}
		}},
		{Name: probetest.Success + "/groups-default-base", Secrets: secrets, Req: req(ld.IP, map[string]any{"filter": "(objectClass=groupOfNames)", "attributes": []string{"cn", "member"}, "ca_pem": caPEM}, good),
			Check: func(t *testing.T, o probetest.Outcome) {
				eq(t, "base", probetest.Decode[ldapResult](t, o.Data).BaseDN, dir.BaseDN)
				eq(t, "groups", len(ldapEntries(t, o)), len(dir.Groups))
			}},
		{Name: probetest.BadCreds, Secrets: secrets, Req: req(ld.IP, users, bad), WantCode: probe.CodeAuth},
		{Name: probetest.BadCreds + "/anonymous", Req: req(ld.IP, users), WantCode: probe.CodeAuth},
		{Name: probetest.Stalled, Req: req(stall(t), merge(users, map[string]any{"timeout": "500ms"}), good), WantCode: probe.CodeTimeout, Secrets: secrets},
		{Name: probetest.WrongProtocol, Req: req(wrong(t), users, good), WantCode: probe.CodeProtocol, Secrets: secrets},
		{Name: probetest.Cancel, Req: req(stall(t), users, good), CancelAfter: 200 * time.Millisecond, WantCode: probe.CodeCanceled, Secrets: secrets},
		{Name: probetest.Oversize, Secrets: secrets, Req: req(ld.IP, merge(users, map[string]any{"max_entries": 3}), good), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[ldapResult](t, o.Data)
			if !r.Truncated || r.Entries != 3 || len(ldapEntries(t, o)) != 3 {
				t.Errorf("truncated %v entries %d, want truncated at 3", r.Truncated, r.Entries)
			}
		}},
		{Name: "bad_params", Req: req(ld.IP, merge(users, map[string]any{"filter": "(uid=broken"}), good), WantCode: probe.CodeBadParams, Secrets: secrets},
		deny(t, ld.IP, users, good),
		{Name: probetest.Success + "/default-is-verified-starttls", Secrets: secrets, Req: req(ld.IP, users, good), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[ldapResult](t, o.Data)
			eq(t, "security", r.Security, "starttls")
			if r.TLS == nil || !r.TLS.Verified {
				t.Errorf("tls %+v: the bind went over TLS that was not verified", r.TLS)
			}
		}},
		{Name: probetest.Success + "/plaintext-allowed-by-the-credential", Secrets: secrets, Req: req(ld.IP, merge(plain, map[string]any{"security": "none"}), insecure),
			Check: func(t *testing.T, o probetest.Outcome) {
				eq(t, "credential", probetest.Decode[ldapResult](t, o.Data).Credential, "ldap-insecure")
			}},
		{Name: probetest.Success + "/untrusted-allowed-by-the-credential", Secrets: secrets, Req: req(ld.IP, plain, insecure),
			Check: func(t *testing.T, o probetest.Outcome) {
				eq(t, "credential", probetest.Decode[ldapResult](t, o.Data).Credential, "ldap-insecure")
			}},
		{Name: "refused/plaintext", Secrets: secrets, Req: req(ld.IP, merge(users, map[string]any{"security": "none"}), good), WantCode: probe.CodeDenied, NoDial: true,
			Check: wantErr("LDAP without TLS")},
		{Name: "refused/untrusted-certificate", Secrets: secrets, Req: req(ld.IP, plain, good), WantCode: probe.CodeDenied,
			Check: wantErr("does not verify")},
		{Name: "refused/ldaps-untrusted-certificate", Secrets: secrets, Req: req(ld.IP, merge(plain, map[string]any{"port": 636}), good), WantCode: probe.CodeDenied},
		{Name: "refused/ssh-credential", Secrets: secrets, Req: req(ld.IP, users, sshCred("prod-ssh", "root", "Sup3r-Secret-SSH-pw")), WantCode: probe.CodeDenied, NoDial: true,
			Check: wantErr("ldap_search takes only credentials of type ldap")},
	}
	for i := range cases {
		cases[i].Now = func() time.Time { return at }
	}
	return cases
}

// ldapCertificate fetches the directory's certificate over LDAPS (it is self-signed, so it
// is its own CA), checks it is the one the manifest lists, and returns its PEM and a time
// inside its validity: the lab makes certificates around its reference day, not today.
func ldapCertificate(t *testing.T, ld lab.Host) (string, time.Time) {
	t.Helper()
	if len(ld.Certificates) == 0 {
		t.Fatal("the lab's directory has no certificate")
	}
	mc := ld.Certificates[0]
	c, err := tls.Dial("tcp", net.JoinHostPort(ld.IP, "636"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("LDAPS of %s: %v", ld.IP, err)
	}
	defer c.Close()
	cert := c.ConnectionState().PeerCertificates[0]
	if sum := sha256.Sum256(cert.Raw); hex.EncodeToString(sum[:]) != mc.SHA256 {
		t.Fatalf("the directory presents %x, the manifest says %s", sum, mc.SHA256)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})), mc.NotBefore.Add(mc.NotAfter.Sub(mc.NotBefore) / 2)
}

func merge(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
