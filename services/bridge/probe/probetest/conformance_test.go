package probetest_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/kinds"
	"github.com/outpost-dev/outpost/services/bridge/probe/probetest"
	"github.com/outpost-dev/outpost/services/bridge/probe/tcpscan"
)

// suites maps every kind to its conformance table.
var suites = map[string]func(t *testing.T) []probetest.Case{
	"echo":         echoCases,
	"tcp_scan":     tcpScanCases,
	"banner":       bannerCases,
	"http_get":     httpGetCases,
	"tls_cert":     tlsCertCases,
	"ssh_exec":     sshCases,
	"snmp_get":     snmpGetCases,
	"snmp_walk":    snmpWalkCases,
	"ldap_search":  ldapCases,
	"sql_query":    sqlCases,
	"http_request": httpRequestCases,
	"file_read":    fileReadCases,
	"winrm_exec":   winrmCases,
}

// TestConformance runs the table of every registered kind.
func TestConformance(t *testing.T) {
	for _, f := range kinds.All() {
		cases, ok := suites[f.Spec().Kind]
		if !ok {
			t.Errorf("kind %s has no conformance table", f.Spec().Kind)
			continue
		}
		t.Run(f.Spec().Kind, func(t *testing.T) {
			t.Parallel()
			probetest.Run(t, probetest.Suite{Factory: f, Allowed: allowed, Cases: cases(t)})
		})
	}
}

// --- the lab, as the manifest describes it ---

func hostile(t *testing.T, mode string) lab.Host {
	t.Helper()
	for _, h := range env.m.Hosts {
		if h.HostileMode == mode {
			return h
		}
	}
	t.Fatalf("the lab has no %s host", mode)
	return lab.Host{}
}

func stall(t *testing.T) string  { return hostile(t, lab.HostileStall).IP }
func wrong(t *testing.T) string  { return hostile(t, lab.HostileWrongProtocol).IP }
func stream(t *testing.T) string { return hostile(t, lab.HostileStream).IP }

func find(t *testing.T, what string, ok func(lab.Host) bool) lab.Host {
	t.Helper()
	for _, h := range env.m.Hosts {
		if !h.Hostile && ok(h) {
			return h
		}
	}
	t.Fatalf("the lab has no %s", what)
	return lab.Host{}
}

func linuxHost(t *testing.T) lab.Host {
	return find(t, "linux host with SSH", func(h lab.Host) bool {
		return h.Class == lab.ClassLinux && h.Credentials.SSH != nil && slices.Contains(h.OpenTCP, 22)
	})
}

func httpsHost(t *testing.T) (lab.Host, lab.Certificate) {
	h := find(t, "web server with HTTPS on 443", func(h lab.Host) bool {
		for _, c := range h.Certificates {
			if slices.Contains(c.Ports, 443) {
				return true
			}
		}
		return false
	})
	for _, c := range h.Certificates {
		if slices.Contains(c.Ports, 443) {
			return h, c
		}
	}
	return h, lab.Certificate{}
}

func snmpHost(t *testing.T, v3 bool) lab.Host {
	return find(t, fmt.Sprintf("switch or router (v3 %v)", v3), func(h lab.Host) bool {
		return (h.Class == lab.ClassSwitch || h.Class == lab.ClassRouter) && h.Credentials.SNMP != nil &&
			(h.Credentials.SNMP.Username != "") == v3
	})
}

func ldapHost(t *testing.T) lab.Host {
	return find(t, "LDAP directory", func(h lab.Host) bool { return h.Class == lab.ClassLDAP })
}

func sshCred(name, user, pw string) probe.Credential {
	return probe.Credential{Name: name, Type: "ssh", Username: user, Secret: pw}
}

func req(target string, params any, creds ...probe.Credential) probe.Request {
	return probe.Request{Target: target, Params: probetest.Params(params), Credentials: creds}
}

// labSecrets are every password of the lab: none may leak anywhere.
func labSecrets() []string {
	var out []string
	for _, h := range env.m.Hosts {
		c := h.Credentials
		if c.SSH != nil {
			out = append(out, c.SSH.Password)
		}
		if c.SNMP != nil {
			out = append(out, c.SNMP.AuthPassword, c.SNMP.PrivPassword)
		}
		if c.LDAP != nil {
			out = append(out, c.LDAP.Password)
		}
	}
	return out
}

func deny(t *testing.T, target string, params any, creds ...probe.Credential) probetest.Case {
	return probetest.Case{Name: probetest.Denied, Req: req(target, params, creds...), DenyAll: true, WantCode: probe.CodeDenied}
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v (manifest)", what, got, want)
	}
}

// --- echo: the reference kind ---

func echoCases(t *testing.T) []probetest.Case {
	return []probetest.Case{
		{Name: probetest.Success, Req: req("", map[string]any{"msg": "hello"}), Check: func(t *testing.T, o probetest.Outcome) {
			eq(t, "msg", probetest.Decode[map[string]any](t, o.Data)["msg"], any("hello"))
		}},
		{Name: probetest.BadCreds, NA: "echo takes no credentials"},
		{Name: probetest.Stalled, Req: req("", map[string]any{"msg": "x", "delay": "10s"}), Timeout: 300 * time.Millisecond, WantCode: probe.CodeTimeout},
		{Name: probetest.WrongProtocol, NA: "echo talks to no target"},
		{Name: probetest.Cancel, Req: req("", map[string]any{"msg": "x", "delay": "10s"}), CancelAfter: 200 * time.Millisecond, WantCode: probe.CodeCanceled},
		{Name: probetest.Oversize, Req: req("", map[string]any{"msg": strings.Repeat("x", 70<<10)}), WantCode: probe.CodeBadParams},
		{Name: probetest.Denied, NA: "echo dials nothing"},
	}
}

// --- tcp_scan ---

// Every port a lab host may open, app tiers (8000, 8080) included.
var labPorts = []int{22, 23, 80, 135, 389, 443, 445, 636, 3306, 3389, 5432, 5985, 8000, 8080, 8443, 9100}

func portList(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}

// openFromChunks gathers a scan's open ports by address.
func openFromChunks(t *testing.T, o probetest.Outcome) map[string][]int {
	got := map[string][]int{}
	for _, c := range o.Chunks {
		for _, h := range probetest.Decode[struct {
			Hosts []struct {
				IP   string `json:"ip"`
				Open []int  `json:"open"`
			} `json:"hosts"`
		}](t, c).Hosts {
			got[h.IP] = h.Open
		}
	}
	return got
}

type scanSummary struct {
	Addresses   int      `json:"addresses"`
	Open        int      `json:"open"`
	HostsUp     int      `json:"hosts_up"`
	Denied      []string `json:"denied"`
	DeniedCount int      `json:"denied_count"`
	Chunks      int      `json:"chunks"`
	Truncated   bool     `json:"truncated"`
	Hosts       []struct {
		IP   string `json:"ip"`
		Open []int  `json:"open"`
	} `json:"hosts"`
}

func tcpScanCases(t *testing.T) []probetest.Case {
	fast := func(p map[string]any) map[string]any { p["seed"] = 1; return p }
	// the bridge's scan budget lifted (its rate is shared by all its scans; a probe can
	// only lower its own)
	unlimited := func(c any) any { cfg := c.(tcpscan.Config); cfg.Rate = 0; return cfg }
	wantHostile := func(ip string) func(t *testing.T, o probetest.Outcome) {
		return func(t *testing.T, o probetest.Outcome) {
			eq(t, "open ports of "+ip, fmt.Sprint(openFromChunks(t, o)[ip]), fmt.Sprint(lab.HostilePorts))
		}
	}
	return []probetest.Case{
		{Name: probetest.Success, Config: unlimited, Req: req("", fast(map[string]any{"targets": []string{labRange, "127.77.161.0/30"}, "ports": portList(labPorts)})),
			Check: func(t *testing.T, o probetest.Outcome) {
				got := openFromChunks(t, o)
				total := 0
				for _, h := range env.m.Hosts {
					var want []int
					for _, p := range h.OpenTCP {
						if slices.Contains(labPorts, p) {
							want = append(want, p)
						}
					}
					total += len(want)
					eq(t, "open ports of "+h.IP, fmt.Sprint(got[h.IP]), fmt.Sprint(want))
				}
				for ip, ports := range got {
					if _, ok := env.m.Host(ip); !ok && len(ports) > 0 {
						t.Errorf("%s has open ports %v, but the manifest has no such host", ip, ports)
					}
				}
				s := probetest.Decode[scanSummary](t, o.Data)
				eq(t, "summary open", s.Open, total)
				eq(t, "addresses scanned", s.Addresses, 256)
				eq(t, "denied", fmt.Sprint(s.Denied), "[127.77.161.0-127.77.161.3]")
				if s.Chunks < 1 {
					t.Error("no chunk was streamed")
				}
			}},
		{Name: probetest.Success + "/dial-engine", Config: func(c any) any { cfg := unlimited(c).(tcpscan.Config); cfg.Engine = "dial"; return cfg },
			Req: req("", fast(map[string]any{"targets": labRange, "ports": portList(labPorts)})),
			Check: func(t *testing.T, o probetest.Outcome) {
				got := openFromChunks(t, o)
				for _, h := range env.m.Hosts {
					var want []int
					for _, p := range h.OpenTCP {
						if slices.Contains(labPorts, p) {
							want = append(want, p)
						}
					}
					eq(t, "open ports of "+h.IP, fmt.Sprint(got[h.IP]), fmt.Sprint(want))
				}
				if o.Dials < 256*int64(len(labPorts)) {
					t.Errorf("the dial engine dialled %d times through Settings.Dial, want every attempt", o.Dials)
				}
			}},
		{Name: probetest.Success + "/no-stream", NoEmit: true, Config: unlimited, Req: req(linuxHost(t).IP, fast(map[string]any{"ports": portList(labPorts)})),
			Check: func(t *testing.T, o probetest.Outcome) {
				s := probetest.Decode[scanSummary](t, o.Data)
				if len(s.Hosts) != 1 || fmt.Sprint(s.Hosts[0].Open) != fmt.Sprint(linuxHost(t).OpenTCP) {
					t.Errorf("hosts %+v, want %s open %v", s.Hosts, linuxHost(t).IP, linuxHost(t).OpenTCP)
				}
			}},
		{Name: probetest.BadCreds, NA: "a connect scan uses no credentials"},
		// a stall host accepts and says nothing: to a connect scan its ports are open
		{Name: probetest.Stalled, Config: unlimited, Req: req(stall(t), fast(map[string]any{"ports": "1-1024,3306,5432"})), Check: wantHostile(stall(t))},
		{Name: probetest.WrongProtocol, Config: unlimited, Req: req(wrong(t), fast(map[string]any{"ports": "1-1024,3306,5432"})), Check: wantHostile(wrong(t))},
		{Name: probetest.Cancel, Req: req(labRange, map[string]any{"ports": "1-65535"}), CancelAfter: 300 * time.Millisecond, WantCode: probe.CodeCanceled},
		{Name: probetest.Cancel + "/unlimited-rate", Config: unlimited, Req: req(labRange, map[string]any{"ports": "1-65535"}), CancelAfter: 300 * time.Millisecond, WantCode: probe.CodeCanceled},
		{Name: probetest.Oversize, MaxOutput: 2048, Config: unlimited, Req: req(labRange, fast(map[string]any{"ports": portList(labPorts)})),
			Check: func(t *testing.T, o probetest.Outcome) {
				if len(o.Chunks) < 3 {
					t.Errorf("%d chunks: a small MaxOutput should split the scan in many", len(o.Chunks))
				}
			}},
		{Name: probetest.Oversize + "/no-stream", NoEmit: true, MaxOutput: 2048, Config: unlimited, Req: req(labRange, fast(map[string]any{"ports": portList(labPorts)})),
			Check: func(t *testing.T, o probetest.Outcome) {
				s := probetest.Decode[scanSummary](t, o.Data)
				if !s.Truncated || len(s.Hosts) >= s.HostsUp {
					t.Errorf("truncated %v with %d of %d hosts: want a truncated summary", s.Truncated, len(s.Hosts), s.HostsUp)
				}
			}},
		{Name: "bad_params", Req: req(labRange, map[string]any{"ports": "70000"}), WantCode: probe.CodeBadParams,
			Check: func(t *testing.T, o probetest.Outcome) {
				if !strings.Contains(o.Err.Error(), `params.ports: "70000" is not a port`) {
					t.Errorf("error %q does not name the field and value", o.Err)
				}
			}},
		deny(t, labRange, map[string]any{"ports": "22"}),
	}
}
