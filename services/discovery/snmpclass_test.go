package discovery

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-dev/outpost/libs/probes/snmp"
)

// snmpFacts are the facts of a host whose SNMP agent answered these values.
func snmpFacts(vals map[string]any) *Facts {
	f := &Facts{IP: "127.77.9.9", SNMP: map[string]any{}}
	for k, v := range vals {
		f.SNMP[k] = v
	}
	return f
}

// TestSNMPClassification: the class comes from the sysObjectID table, the bridge MIB, the
// routing table and sysServices; ipForwarding alone decides nothing.
func TestSNMPClassification(t *testing.T) {
	rs, err := LoadRuleset("")
	if err != nil {
		t.Fatal(err)
	}
	const (
		descr, oid, services, fwd, cidr, inet, bridge = "1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.7.0",
			"1.3.6.1.2.1.4.1.0", "1.3.6.1.2.1.4.24.3.0", "1.3.6.1.2.1.4.24.6.0", "1.3.6.1.2.1.17.1.2.0"
	)
	for _, tc := range []struct {
		name      string
		vals      map[string]any
		class, by string // "" class: no classifier matches
	}{
		{"net-snmp on Linux, not forwarding", map[string]any{descr: "Linux vm 6.1.0 #1 SMP x86_64", oid: ".1.3.6.1.4.1.8072.3.2.10", services: 72.0, fwd: 2.0, inet: 9.0}, "linux_server", "snmp_linux_host"},
		{"net-snmp on a forwarding Linux box with routes", map[string]any{oid: ".1.3.6.1.4.1.8072.3.2.10", services: 76.0, fwd: 1.0, inet: 12.0}, "linux_server", "snmp_linux_host"},
		{"net-snmp on FreeBSD", map[string]any{oid: "1.3.6.1.4.1.8072.3.2.8", fwd: 2.0}, "unix_server", "snmp_unix_host"},
		{"Microsoft SNMP service on a server", map[string]any{oid: ".1.3.6.1.4.1.311.1.1.3.1.2", services: 76.0, fwd: 2.0}, "windows_server", "snmp_windows_host"},
		{"Cisco switch: bridge MIB", map[string]any{oid: ".1.3.6.1.4.1.9.1.1208", services: 2.0, fwd: 2.0, bridge: 26.0}, "ip_switch", "switch"},
		{"Cisco L3 switch: forwards, routes and bridges", map[string]any{oid: ".1.3.6.1.4.1.9.1.2494", services: 6.0, fwd: 1.0, cidr: 14.0, bridge: 48.0}, "ip_switch", "switch"},
		{"Arista switch", map[string]any{oid: ".1.3.6.1.4.1.30065.1.3011.7280", fwd: 1.0, inet: 30.0, bridge: 52.0}, "ip_switch", "switch"},
		{"Juniper router: forwards with routes, no bridge", map[string]any{oid: ".1.3.6.1.4.1.2636.1.1.1.2.133", services: 4.0, fwd: 1.0, cidr: 7.0}, "ip_router", "router"},
		{"router of an unknown vendor", map[string]any{oid: ".1.3.6.1.4.1.99999.1", services: 78.0, fwd: 1.0, inet: 3.0}, "ip_router", "router"},
		{"forwarding without a routing table is no router", map[string]any{oid: ".1.3.6.1.4.1.99999.1", services: 72.0, fwd: 1.0}, "", ""},
		{"unknown agent that does not forward is no switch", map[string]any{oid: ".1.3.6.1.4.1.99999.1", services: 72.0, fwd: 2.0}, "", ""},
		{"layer-2-only sysServices", map[string]any{oid: ".1.3.6.1.4.1.99999.7", services: 2.0}, "ip_switch", "switch_by_services"},
		{"layer-3 sysServices without applications", map[string]any{oid: ".1.3.6.1.4.1.99999.7", services: 6.0}, "ip_router", "router_by_services"},
		{"Aruba controller, no finer evidence", map[string]any{oid: ".1.3.6.1.4.1.14823.1.1.32", services: 72.0}, "network_gear", "network_gear"},
		{"HP JetDirect printer by sysObjectID", map[string]any{oid: ".1.3.6.1.4.1.11.2.3.9.1", services: 72.0, fwd: 2.0}, "printer", "printer"},
		{"HP ProCurve switch is not a printer", map[string]any{oid: ".1.3.6.1.4.1.11.2.3.7.11.181.11", services: 74.0, fwd: 2.0, bridge: 28.0}, "ip_switch", "switch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := rs.Classify(snmpFacts(tc.vals))
			switch {
			case cl == nil && tc.class != "":
				t.Fatalf("no classifier matched, want %s by %s", tc.class, tc.by)
			case cl != nil && (cl.Class != tc.class || cl.Name != tc.by):
				t.Fatalf("classified %s by %s, want %q by %q", cl.Class, cl.Name, tc.class, tc.by)
			}
		})
	}
}

func TestObjectIDLookupLongestPrefix(t *testing.T) {
	rs, err := LoadRuleset("")
	if err != nil {
		t.Fatal(err)
	}
	for oid, want := range map[string]string{
		".1.3.6.1.4.1.11.2.3.9.1":   "printer",
		"1.3.6.1.4.1.11.2.3.7.11.1": "network",
		"1.3.6.1.4.1.8072.3.2.10":   "linux_host",
		"1.3.6.1.4.1.8072.3.2.100":  "", // a prefix ends at a dot: .100 is not .10
		"1.3.6.1.4.1.90":            "", // nor is enterprise 90 Cisco's 9
	} {
		got := ""
		if e := rs.LookupObjectID(oid); e != nil {
			got = e.Kind
		}
		if got != want {
			t.Errorf("%s: kind %q, want %q", oid, got, want)
		}
	}
}

func TestBadObjectIDTable(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "extra.yaml"), []byte("sys_object_ids:\n  - {prefix: 1.3.6.1.4.1.9, kind: network}\n  - {prefix: 'iso.3.6', kind: network}\n  - {prefix: 1.3.6.1.4.1.5, kind: toaster}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadRuleset(dir)
	if err == nil {
		t.Fatal("bad sys_object_ids loaded")
	}
	for _, want := range []string{"extra.yaml:3:", "not a numeric OID", "extra.yaml:4:", `unknown kind "toaster"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestRealNetSNMPAgentIsALinuxHost starts this machine's net-snmp agent (Debian's snmpd) on
// 127.0.0.71 with its own configuration and community, asks it what the classify phase's
// snmp_system probe asks, and classifies the answer: a Linux host, not a switch (the agent
// reports ipForwarding = 2 like every non-forwarding host).
func TestRealNetSNMPAgentIsALinuxHost(t *testing.T) {
	bin := "/usr/sbin/snmpd"
	if _, err := os.Stat(bin); err != nil {
		t.Skip("Debian's snmpd is not installed (apt-get install snmpd; .ci/run installs it)")
	}
	const ip, community = "127.0.0.71", "estate-c0mmunity-5d2"
	pc, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	dir := t.TempDir()
	conf := fmt.Sprintf("agentAddress udp:%s:%d\nrocommunity %s 127.0.0.0/8\nsysName estate-snmp-host\nsysServices 72\n", ip, port, community)
	if err := os.WriteFile(filepath.Join(dir, "snmpd.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// -C: only this configuration; no MIB files are read (numeric OIDs only). -I -smux: no
	// SMUX listener, which snmpd otherwise opens on 0.0.0.0:199 — every lab address of the
	// tests running beside this one would show port 199 open.
	cmd := exec.Command(bin, "-f", "-C", "-c", filepath.Join(dir, "snmpd.conf"), "-M", dir, "-m", "", "-I", "-smux", "-Lf", filepath.Join(dir, "snmpd.log"))
	cmd.Env = append(os.Environ(), "SNMP_PERSISTENT_DIR="+dir, "MIBS=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "snmpd.log"))
			t.Logf("snmpd log:\n%s", b)
		}
	})

	rs, err := LoadRuleset("")
	if err != nil {
		t.Fatal(err)
	}
	var oids []string
	for _, p := range rs.Probes {
		if p.Name == "snmp_system" {
			for _, o := range p.Params["oids"].([]any) {
				oids = append(oids, o.(string))
			}
		}
	}
	g := &gosnmp.GoSNMP{Target: ip, Port: uint16(port), Community: community, Version: gosnmp.Version2c, Timeout: 500 * time.Millisecond, Retries: 0, MaxOids: len(oids)}
	if err := g.Connect(); err != nil {
		t.Fatal(err)
	}
	defer g.Conn.Close()
	var pkt *gosnmp.SnmpPacket
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		g.Context = ctx
		pkt, err = g.Get(oids)
		cancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("snmpd on %s:%d does not answer: %v", ip, port, err)
	}
	var vals []snmp.Value
	for _, v := range pkt.Variables {
		var val any
		switch v.Type {
		case gosnmp.OctetString:
			val = string(v.Value.([]byte))
		case gosnmp.NoSuchObject, gosnmp.NoSuchInstance, gosnmp.Null, gosnmp.EndOfMibView:
		case gosnmp.ObjectIdentifier:
			val = v.Value
		default:
			val = float64(gosnmp.ToBigInt(v.Value).Int64()) // numbers arrive as JSON numbers
		}
		vals = append(vals, snmp.Value{OID: v.Name, Type: v.Type.String(), Value: val})
	}
	f := &Facts{IP: ip}
	f.addSNMP(vals)
	if got := f.SNMPString(oidSysObjectID); strings.TrimPrefix(got, ".") != "1.3.6.1.4.1.8072.3.2.10" {
		t.Fatalf("sysObjectID %q: not net-snmp's Linux agent", got)
	}
	cl := rs.Classify(f)
	if cl == nil || cl.Class != "linux_server" {
		t.Fatalf("net-snmp on Linux classified %v (ipForwarding %s), want linux_server", cl, f.SNMPString("1.3.6.1.2.1.4.1.0"))
	}
	attrs := cl.Attributes(f)
	if attrs["name"] != "estate-snmp-host" || attrs["os"] != "Linux" || attrs["kernel_release"] == nil {
		t.Errorf("attributes %v: want name estate-snmp-host, os Linux and the kernel release", attrs)
	}
}
