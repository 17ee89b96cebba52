package lab_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"
	"github.com/outpost-dev/outpost/libs/lab"
)

func snmpClient(t *testing.T, h lab.Host, mod func(*gosnmp.GoSNMP)) *gosnmp.GoSNMP {
	t.Helper()
	g := &gosnmp.GoSNMP{
		Target: h.IP, Port: 161, Version: gosnmp.Version2c, Community: h.Credentials.SNMP.Community,
		Timeout: time.Second, Retries: 1, MaxOids: gosnmp.MaxOids, MaxRepetitions: 20,
	}
	if mod != nil {
		mod(g)
	}
	if err := g.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Conn.Close() })
	return g
}

func v3(h lab.Host) func(*gosnmp.GoSNMP) {
	c := h.Credentials.SNMP
	return func(g *gosnmp.GoSNMP) {
		g.Version = gosnmp.Version3
		g.SecurityModel = gosnmp.UserSecurityModel
		g.MsgFlags = gosnmp.AuthPriv
		g.SecurityParameters = &gosnmp.UsmSecurityParameters{
			UserName: c.Username, AuthenticationProtocol: gosnmp.SHA, AuthenticationPassphrase: c.AuthPassword,
			PrivacyProtocol: gosnmp.AES, PrivacyPassphrase: c.PrivPassword,
		}
	}
}

func str(v any) string {
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	return fmt.Sprint(v)
}

func TestSNMPNetworkGear(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.203.0/24", 60)
	m := l.Manifest()
	for _, h := range m.Hosts {
		if !isGear(h) {
			continue
		}
		t.Run(h.Name, func(t *testing.T) {
			g := snmpClient(t, h, nil)
			res, err := g.Get([]string{".1.3.6.1.2.1.1.1.0", ".1.3.6.1.2.1.1.2.0", ".1.3.6.1.2.1.1.3.0", ".1.3.6.1.2.1.47.1.1.1.1.11.1", ".1.3.6.1.2.1.1.99.0"})
			if err != nil {
				t.Fatal(err)
			}
			v := res.Variables
			if str(v[0].Value) != h.SysDescr || v[1].Value != h.SysObjectID || v[2].Type != gosnmp.TimeTicks || str(v[3].Value) != h.Serial {
				t.Errorf("system group: %+v", v)
			}
			if v[4].Type != gosnmp.NoSuchObject && v[4].Type != gosnmp.NoSuchInstance {
				t.Errorf("unknown OID answered %v", v[4].Type)
			}
			ifIndex, err := g.BulkWalkAll(".1.3.6.1.2.1.2.2.1.1")
			if err != nil {
				t.Fatal(err)
			}
			if len(ifIndex) != h.InterfaceCount || len(h.Interfaces) != h.InterfaceCount {
				t.Errorf("ifTable has %d rows, manifest interface_count %d", len(ifIndex), h.InterfaceCount)
			}
			names, err := g.BulkWalkAll(".1.3.6.1.2.1.31.1.1.1.1")
			if err != nil {
				t.Fatal(err)
			}
			for i, n := range names {
				if i < len(h.Interfaces) && str(n.Value) != h.Interfaces[i].Name {
					t.Errorf("ifName row %d = %q, manifest %q", i, str(n.Value), h.Interfaces[i].Name)
				}
			}
			// LLDP remote systems are the manifest's neighbours of this device
			rem, err := g.WalkAll(".1.0.8802.1.1.2.1.4.1.1.9")
			if err != nil {
				t.Fatal(err)
			}
			var got, want []string
			for _, r := range rem {
				got = append(got, str(r.Value))
			}
			for _, n := range m.Neighbours {
				switch h.IP {
				case n.A:
					o, _ := m.Host(n.B)
					want = append(want, o.Name)
				case n.B:
					o, _ := m.Host(n.A)
					want = append(want, o.Name)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("lldpRemSysName %v, manifest neighbours %v", got, want)
			}
			if h.Credentials.SNMP.Username != "" {
				g3 := snmpClient(t, h, v3(h))
				res, err := g3.Get([]string{".1.3.6.1.2.1.1.5.0"})
				if err != nil {
					t.Fatalf("v3: %v", err)
				}
				if name := str(res.Variables[0].Value); !strings.HasPrefix(name, h.Name) {
					t.Errorf("v3 sysName %q", name)
				}
				walked, err := g3.BulkWalkAll(".1.3.6.1.2.1.2.2.1.2")
				if err != nil || len(walked) != h.InterfaceCount {
					t.Errorf("v3 walk: %d rows, %v", len(walked), err)
				}
			}
		})
	}
}

func TestSNMPRefusesBadCredentials(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.209.0/24", 60)
	var v3Host, printer lab.Host
	for _, h := range l.Manifest().Hosts {
		if isGear(h) && h.Credentials.SNMP.Username != "" && v3Host.IP == "" {
			v3Host = h
		}
		if h.Class == lab.ClassPrinter && printer.IP == "" {
			printer = h
		}
	}
	if v3Host.IP == "" {
		t.Fatal("no SNMPv3 device in the lab")
	}
	quick := func(g *gosnmp.GoSNMP) { g.Timeout, g.Retries = 300*time.Millisecond, 0 }
	g := snmpClient(t, v3Host, func(g *gosnmp.GoSNMP) { quick(g); g.Community = "wrong" })
	if _, err := g.Get([]string{".1.3.6.1.2.1.1.1.0"}); err == nil {
		t.Error("answered a wrong community")
	}
	bad := v3Host
	c := *bad.Credentials.SNMP
	c.AuthPassword = "not-the-password"
	bad.Credentials.SNMP = &c
	g3 := snmpClient(t, bad, func(g *gosnmp.GoSNMP) { v3(bad)(g); quick(g) })
	if _, err := g3.Get([]string{".1.3.6.1.2.1.1.1.0"}); err == nil {
		t.Error("v3 accepted a wrong auth password")
	}
	// printers: public community, printer MIB
	p := snmpClient(t, printer, nil)
	res, err := p.Get([]string{".1.3.6.1.2.1.1.1.0", ".1.3.6.1.2.1.43.5.1.1.17.1"})
	if err != nil {
		t.Fatal(err)
	}
	if printer.Credentials.SNMP.Community != "public" || str(res.Variables[0].Value) != printer.SysDescr || str(res.Variables[1].Value) != printer.Serial {
		t.Errorf("printer: %+v", res.Variables)
	}
}
