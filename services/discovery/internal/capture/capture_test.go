package capture

// TestCapture records real lab outputs as fixtures (run by hand with OUTPOST_CAPTURE=1; it
// binds 127.77.121.0/24 and needs root or CAP_NET_BIND_SERVICE).

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"golang.org/x/crypto/ssh"

	"github.com/outpost-dev/outpost/libs/lab"
)

var commands = []string{
	"uname -a", "hostname", "cat /etc/os-release", "cat /sys/class/dmi/id/product_serial",
	"cat /sys/class/dmi/id/sys_vendor", "cat /sys/class/dmi/id/product_name", "ip -o link", "ip -o addr",
	"nproc", "cat /proc/meminfo | head -1", "dpkg-query -W -f '${Package}\\t${Version}\\n'",
	"rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\n'", "ss -tulnp",
}

var getOIDs = []string{"1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.2.1.0", "1.3.6.1.2.1.4.1.0",
	"1.3.6.1.2.1.47.1.1.1.1.10.1", "1.3.6.1.2.1.47.1.1.1.1.11.1", "1.3.6.1.2.1.47.1.1.1.1.12.1", "1.3.6.1.2.1.47.1.1.1.1.13.1",
	"1.3.6.1.2.1.25.3.2.1.3.1", "1.3.6.1.2.1.43.5.1.1.17.1",
	"1.3.6.1.2.1.1.7.0", "1.3.6.1.2.1.4.24.3.0", "1.3.6.1.2.1.4.24.6.0", "1.3.6.1.2.1.17.1.2.0"}

var walkRoots = []string{"1.3.6.1.2.1.2.2.1.2", "1.3.6.1.2.1.2.2.1.5", "1.3.6.1.2.1.2.2.1.6", "1.3.6.1.2.1.2.2.1.8",
	"1.3.6.1.2.1.31.1.1.1.1", "1.0.8802.1.1.2.1.3.7.1.3", "1.0.8802.1.1.2.1.4.1.1",
	"1.0.8802.1.1.2.1.3.2", "1.0.8802.1.1.2.1.4.2.1.3", "1.3.6.1.4.1.9.9.23.1.2.1.1"}

func TestCapture(t *testing.T) {
	if os.Getenv("OUTPOST_CAPTURE") == "" {
		t.Skip("set OUTPOST_CAPTURE=1 to record lab fixtures")
	}
	l, err := lab.Start(context.Background(), lab.Config{Range: "127.77.121.0/24", Hosts: 30, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	m := l.Manifest()
	out := map[string]map[string]string{}
	for _, h := range m.Hosts {
		if h.Class != "linux_server" || h.Credentials.SSH == nil {
			continue
		}
		c, err := ssh.Dial("tcp", h.IP+":22", &ssh.ClientConfig{User: h.Credentials.SSH.Username,
			Auth: []ssh.AuthMethod{ssh.Password(h.Credentials.SSH.Password)}, HostKeyCallback: ssh.InsecureIgnoreHostKey()})
		if err != nil {
			t.Fatal(err)
		}
		res := map[string]string{}
		for _, cmd := range commands {
			s, _ := c.NewSession()
			b, _ := s.CombinedOutput(cmd)
			res[cmd] = string(b)
			s.Close()
		}
		c.Close()
		out[h.IP] = res
	}
	snmpOut := map[string][]map[string]any{}
	for _, h := range m.Hosts {
		if !h.SNMP || h.Credentials.SNMP == nil {
			continue
		}
		g := &gosnmp.GoSNMP{Target: h.IP, Port: 161, Community: h.Credentials.SNMP.Community, Version: gosnmp.Version2c,
			Timeout: 2 * time.Second, Retries: 1, MaxOids: 60}
		if err := g.Connect(); err != nil {
			t.Fatal(err)
		}
		var vals []map[string]any
		add := func(pdu gosnmp.SnmpPDU) {
			var v any
			switch pdu.Type {
			case gosnmp.OctetString:
				b := pdu.Value.([]byte)
				if len(b) == 6 && (strings.Contains(pdu.Name, ".1.3.6.1.2.1.2.2.1.6.") || strings.Contains(pdu.Name, ".1.0.8802.1.1.2.1.4.1.1.5.")) {
					v = net.HardwareAddr(b).String()
				} else {
					v = string(b)
				}
			case gosnmp.NoSuchObject, gosnmp.NoSuchInstance, gosnmp.Null, gosnmp.EndOfMibView:
				v = nil
			default:
				v = pdu.Value
			}
			vals = append(vals, map[string]any{"oid": pdu.Name, "type": pdu.Type.String(), "value": v})
		}
		pkt, err := g.Get(getOIDs)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range pkt.Variables {
			add(v)
		}
		for _, root := range walkRoots {
			if err := g.BulkWalk(root, func(pdu gosnmp.SnmpPDU) error { add(pdu); return nil }); err != nil {
				t.Fatal(err)
			}
		}
		g.Conn.Close()
		snmpOut[h.IP] = vals
	}
	b, _ := json.MarshalIndent(map[string]any{"manifest": m, "ssh": out, "snmp": snmpOut}, "", " ")
	if err := os.WriteFile(filepath.Join(os.Getenv("OUTPOST_CAPTURE"), "lab-capture.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
