package discovery

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/snmp"
	"github.com/outpost-dev/outpost/libs/probes/sshexec"
)

// capture is testdata/lab-capture.json: a lab (127.77.121.0/24, 30 hosts, seed 7) with the
// real outputs of its SSH command table and SNMP agents (recorded by internal/capture).
type capture struct {
	Manifest lab.Manifest                 `json:"manifest"`
	SSH      map[string]map[string]string `json:"ssh"`
	SNMP     map[string][]snmp.Value      `json:"snmp"`
}

func loadCapture(t *testing.T) *capture {
	t.Helper()
	b, err := os.ReadFile("testdata/lab-capture.json")
	if err != nil {
		t.Fatal(err)
	}
	var c capture
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// factsOf builds what the probes would have reported for a manifest host.
func (c *capture) factsOf(h lab.Host) Facts {
	f := Facts{IP: h.IP, Ports: slices.Clone(h.OpenTCP)}
	if outs, ok := c.SSH[h.IP]; ok {
		var r sshexec.Result
		for cmd, out := range outs {
			code := 0
			if strings.Contains(out, "command not found") {
				code = 127
			}
			r.Outputs = append(r.Outputs, sshexec.Output{Command: cmd, Stdout: probes.Blob{Text: out}, ExitCode: &code})
		}
		f.addSSH(&r)
	}
	if vals, ok := c.SNMP[h.IP]; ok {
		// through JSON, as a result's data arrives
		b, _ := json.Marshal(vals)
		var vs []snmp.Value
		_ = json.Unmarshal(b, &vs)
		f.addSNMP(vs)
	}
	for _, w := range h.Web {
		if f.HTTP == nil {
			f.HTTP = map[int]HTTPFact{}
		}
		f.HTTP[w.Port] = HTTPFact{Status: w.Status, Server: w.Server, Title: w.Title, TLS: w.TLS}
	}
	for _, crt := range h.Certificates {
		for _, p := range crt.Ports {
			if f.TLS == nil {
				f.TLS = map[int]probes.Certificate{}
			}
			f.TLS[p] = probes.Certificate{SubjectCN: crt.SubjectCN, Subject: crt.Subject, Issuer: crt.Issuer, NotBefore: crt.NotBefore,
				NotAfter: crt.NotAfter, SHA256: crt.SHA256, DNSNames: crt.DNSNames, IPs: crt.IPs}
		}
	}
	return f
}

func classifyHost(t *testing.T, rs *Ruleset, c *capture, h lab.Host) (*Host, *envelope.CIPayload) {
	t.Helper()
	host := &Host{IP: h.IP, Facts: c.factsOf(h)}
	cl := rs.Classify(&host.Facts)
	if cl == nil {
		return host, nil
	}
	host.Class, host.Classifier, host.Attributes = cl.Class, cl.Name, cl.Attributes(&host.Facts)
	host.Name, _ = host.Attributes["name"].(string)
	return host, BuildPayload(rs, host, cl, time.Now())
}

func itemsOf(p *envelope.CIPayload, class string) []envelope.CIItem {
	var out []envelope.CIItem
	for _, it := range p.Items {
		if it.Class == class {
			out = append(out, it)
		}
	}
	return out
}

// TestClassifyLab checks every host of the recorded lab against the manifest: class,
// Linux os/version/serial/MACs/software count, gear serial and interface count.
func TestClassifyLab(t *testing.T) {
	c := loadCapture(t)
	rs, err := LoadRuleset("")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"linux_server": "linux_server", "windows_server": "windows_server", "web_server": "web_server",
		"ip_switch": "ip_switch", "ip_router": "ip_router", "printer": "printer", "ldap_directory": "ldap_directory"}
	for _, h := range c.Manifest.Hosts {
		t.Run(h.IP+"-"+h.Class, func(t *testing.T) {
			host, p := classifyHost(t, rs, c, h)
			if h.Class == "" {
				if p != nil {
					t.Fatalf("dead address classified %s", host.Class)
				}
				return
			}
			if p == nil {
				t.Fatalf("not classified; facts %+v", host.Facts)
			}
			if host.Class != want[h.Class] {
				t.Fatalf("class %s, manifest %s", host.Class, h.Class)
			}
			root := p.Items[0].Attributes
			switch h.Class {
			case "linux_server":
				if root["os"] != h.OS || root["os_version"] != h.OSVersion {
					t.Errorf("os %v %v, manifest %q %q", root["os"], root["os_version"], h.OS, h.OSVersion)
				}
				if sn, _ := root["serial_number"].(string); sn != h.Serial {
					t.Errorf("serial %q, manifest %q", sn, h.Serial)
				}
				if n := len(itemsOf(p, "software")); n != len(h.Software) {
					t.Errorf("software %d, manifest %d", n, len(h.Software))
				}
				var macs []string
				for _, a := range itemsOf(p, "network_adapter") {
					macs = append(macs, a.Attributes["mac_address"].(string))
				}
				wantMACs := slices.Clone(h.MACs)
				slices.Sort(macs)
				slices.Sort(wantMACs)
				if !slices.Equal(macs, wantMACs) {
					t.Errorf("MACs %v, manifest %v", macs, wantMACs)
				}
				for _, app := range h.Applications {
					found := false
					for _, it := range itemsOf(p, app.Class) {
						if it.Parent == "host" && slices.Contains(app.Ports, it.Attributes["port"].(int)) {
							found = true
						}
					}
					if !found {
						t.Errorf("application %s (%s on %v) missing", app.Name, app.Class, app.Ports)
					}
				}
			case "ip_switch", "ip_router", "printer":
				if sn, _ := root["serial_number"].(string); sn != h.Serial {
					t.Errorf("serial %q, manifest %q", sn, h.Serial)
				}
				if h.Class != "printer" && root["port_count"] != h.InterfaceCount {
					t.Errorf("port_count %v, manifest %d", root["port_count"], h.InterfaceCount)
				}
			}
			certs := itemsOf(p, "certificate")
			if len(certs) != len(h.Certificates) {
				t.Errorf("certificates %d, manifest %d", len(certs), len(h.Certificates))
			}
			for _, crt := range h.Certificates {
				ok := false
				for _, it := range certs {
					if it.Attributes["fingerprint"] == crt.SHA256 && it.Attributes["not_after"] == crt.NotAfter.UTC().Format(time.RFC3339) {
						ok = true
					}
				}
				if !ok {
					t.Errorf("certificate %s (not after %s) missing", crt.SubjectCN, crt.NotAfter)
				}
			}
		})
	}
}

// TestLLDPNeighbours checks that each switch's LLDP table names the manifest's neighbours.
func TestLLDPNeighbours(t *testing.T) {
	c := loadCapture(t)
	names := map[string]string{}
	for _, h := range c.Manifest.Hosts {
		names[h.IP] = h.Name
	}
	for _, n := range c.Manifest.Neighbours {
		h := lab.Host{IP: n.A}
		f := c.factsOf(h)
		found := false
		for _, l := range f.lldpNeighbours() {
			if l.RemoteName == names[n.B] {
				found = true
			}
		}
		if !found {
			t.Errorf("%s (%s) does not see %s (%s) over LLDP: %+v", n.A, names[n.A], n.B, names[n.B], f.lldpNeighbours())
		}
	}
}

func TestSSHCredentialsFailedClassifiedByPorts(t *testing.T) {
	rs, err := LoadRuleset("")
	if err != nil {
		t.Fatal(err)
	}
	f := Facts{IP: "127.77.120.9", Ports: []int{22, 5432}, SSHFailed: true}
	c := rs.Classify(&f)
	if c == nil || c.Class != "linux_server" || c.Name != "ssh_only_by_ports" {
		t.Fatalf("classifier %+v", c)
	}
}

func writeFile(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestClassifierFromDirectory adds a device type with no Go code.
func TestClassifierFromDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "pdu.yaml", `
classifiers:
  - name: apc_pdu
    class: network_gear
    priority: 95
    match:
      sys_descr: '^APC Web/SNMP'
    extract:
      name: {from: "snmp:1.3.6.1.2.1.1.5.0", regex: '(.+)'}
      model: {expr: 'snmp_str("1.3.6.1.2.1.1.1.0") matches "MN:(\\S+)" ? "AP" : ""'}
`)
	rs, err := LoadRuleset(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := Facts{IP: "127.77.120.5", SNMP: map[string]any{oidSysDescr: "APC Web/SNMP Management Card (MB:v4.1.0 PF:v6.4.6 MN:AP7900B)", oidSysName: "RACKPDU"}}
	c := rs.Classify(&f)
	if c == nil || c.Class != "network_gear" {
		t.Fatalf("classifier %+v", c)
	}
	if got := c.Attributes(&f); got["name"] != "RACKPDU" || got["model"] != "AP" {
		t.Fatalf("attributes %v", got)
	}
}

func TestBadClassifierFiles(t *testing.T) {
	cases := []struct {
		name, body, want string
		line             int
	}{
		{"invalid.yaml", "classifiers:\n  - name: x\n    class: [unclosed\n", "did not find", 2},
		{"kind.yaml", "probes:\n  - name: ok\n    kind: ssh_exec\n  - name: bad\n    kind: telepathy\n", `unknown probe kind "telepathy"`, 4},
		{"regex.yaml", "classifiers:\n  - name: r\n    class: printer\n    match:\n      sys_descr: '(unclosed'\n", "bad regex", 2},
		{"expr.yaml", "classifiers:\n  - name: e\n    class: printer\n    match:\n      expr: 'ports +* 2'\n", "bad expr", 2},
		{"class.yaml", "classifiers:\n  - name: c\n    class: toaster\n", `unknown class "toaster"`, 2},
		{"field.yaml", "classifiers:\n  - name: f\n    class: printer\n    matsh: {}\n", "field matsh not found", 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, tc.name, tc.body)
			_, err := LoadRuleset(dir)
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("error %v, want a LoadError", err)
			}
			if le.File != filepath.Join(dir, tc.name) || le.Line != tc.line || !strings.Contains(le.Reason, tc.want) {
				t.Fatalf("got %s:%d: %s; want line %d and %q", le.File, le.Line, le.Reason, tc.line, tc.want)
			}
		})
	}
}

// TestReloadKeepsPreviousSet: a bad file is refused and the good set stays in use.
func TestReloadKeepsPreviousSet(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "extra.yaml", "classifiers:\n  - name: extra\n    class: printer\n    priority: 1\n    match: {ports_any: [631]}\n")
	c, err := NewClassifiers(dir)
	if err != nil {
		t.Fatal(err)
	}
	before := len(c.Current().Classifiers)
	writeFile(t, dir, "extra.yaml", "classifiers:\n  - name: extra\n    class: printer\n    match: {sys_descr: '(['}\n")
	err = c.Reload()
	if err == nil || !strings.Contains(err.Error(), "extra.yaml:2") {
		t.Fatalf("reload error %v, want the file and line", err)
	}
	if len(c.Current().Classifiers) != before || c.Current().Classify(&Facts{Ports: []int{631}}) == nil {
		t.Fatal("the previous good set is not in use")
	}
	writeFile(t, dir, "extra.yaml", "classifiers: []\n")
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if len(c.Current().Classifiers) != before-1 {
		t.Fatalf("reload did not take the new set")
	}
}
