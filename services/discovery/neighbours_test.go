package discovery

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/libs/probes/snmp"
)

// walkGear reads what the classify and explore probes of a switch or router read, from the
// live lab agent, rendered as the snmp probes render it.
func walkGear(t *testing.T, rs *Ruleset, cl *Classifier, ip, community string) *Facts {
	t.Helper()
	g := &gosnmp.GoSNMP{Target: ip, Port: 161, Community: community, Version: gosnmp.Version2c, Timeout: 2 * time.Second, Retries: 1, MaxOids: 60}
	if err := g.Connect(); err != nil {
		t.Fatal(err)
	}
	defer g.Conn.Close()
	var vals []snmp.Value
	add := func(pdu gosnmp.SnmpPDU) {
		var v any
		switch pdu.Type {
		case gosnmp.OctetString:
			b := pdu.Value.([]byte)
			isMAC := strings.Contains(pdu.Name, ".1.3.6.1.2.1.2.2.1.6.") || strings.Contains(pdu.Name, ".1.0.8802.1.1.2.1.4.1.1.5.")
			switch {
			case len(b) == 6 && isMAC:
				v = net.HardwareAddr(b).String()
			case printable(b):
				v = string(b)
			default:
				v = hexString(b)
			}
		case gosnmp.NoSuchObject, gosnmp.NoSuchInstance, gosnmp.Null, gosnmp.EndOfMibView:
		case gosnmp.ObjectIdentifier:
			v = pdu.Value
		default:
			v = float64(gosnmp.ToBigInt(pdu.Value).Int64())
		}
		vals = append(vals, snmp.Value{OID: pdu.Name, Type: pdu.Type.String(), Value: v})
	}
	for _, p := range rs.Probes {
		if p.Name == "snmp_system" {
			var oids []string
			for _, o := range p.Params["oids"].([]any) {
				oids = append(oids, o.(string))
			}
			pkt, err := g.Get(oids)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range pkt.Variables {
				add(v)
			}
		}
	}
	for _, e := range cl.Explore {
		for _, o := range e.Params["oids"].([]any) {
			if err := g.BulkWalk(o.(string), func(pdu gosnmp.SnmpPDU) error { add(pdu); return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	f := &Facts{IP: ip}
	f.addSNMP(vals)
	return f
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\r' && c != '\n' && c != '\t' || c > 0x7e {
			return false
		}
	}
	return len(b) > 0
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestNeighboursOfTheLab: with lab seed 11 (Cisco devices name themselves by FQDN, their
// neighbours report short names) every link of the manifest is found from each end, over
// LLDP and, between Cisco devices, CDP too; each link's two ports are known adapters.
func TestNeighboursOfTheLab(t *testing.T) {
	l, err := lab.Start(context.Background(), lab.Config{Range: "127.77.163.0/24", Hosts: 60, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	m := l.Manifest()
	rs, err := LoadRuleset("")
	if err != nil {
		t.Fatal(err)
	}
	state := &runState{hosts: map[string]*Host{}}
	for _, h := range m.Hosts {
		if h.Credentials.SNMP == nil || (h.Class != "ip_switch" && h.Class != "ip_router") {
			continue
		}
		// classify on the system group, then read what the class explores
		f := walkGear(t, rs, &Classifier{}, h.IP, h.Credentials.SNMP.Community)
		cl := rs.Classify(f)
		if cl == nil || cl.Class != h.Class {
			t.Fatalf("%s (%s): classified %v, manifest says %s", h.IP, h.Name, cl, h.Class)
		}
		f = walkGear(t, rs, cl, h.IP, h.Credentials.SNMP.Community)
		rs.Classify(f)
		host := &Host{IP: h.IP, Class: cl.Class, Facts: *f}
		host.Name, _ = cl.Attributes(f)["name"].(string)
		host.LLDP = f.lldpNeighbours()
		state.hosts[h.IP] = host
	}
	if len(m.Neighbours) < 3 {
		t.Fatalf("%d links in the lab: too few to test", len(m.Neighbours))
	}
	ix := newNeighbourIndex(state)
	fqdnNamed, cdp := 0, 0
	for _, link := range m.Neighbours {
		for _, end := range [][4]string{{link.A, link.APort, link.B, link.BPort}, {link.B, link.BPort, link.A, link.APort}} {
			a, b := state.hosts[end[0]], state.hosts[end[2]]
			if a == nil || b == nil {
				t.Fatalf("link %v: an end is no switch or router of the lab", link)
			}
			if strings.Contains(b.Name, ".") {
				fqdnNamed++
			}
			found := false
			for _, n := range a.LLDP {
				if ix.find(n) == b && n.LocalPort == end[1] && n.RemotePort == end[3] {
					found = true
					if adapterNamed(a, n.LocalPort) == nil || adapterNamed(b, n.RemotePort) == nil {
						t.Errorf("%s %s – %s %s: a port is no known adapter", a.Name, n.LocalPort, b.Name, n.RemotePort)
					}
				}
				if n.Protocol == "cdp" {
					cdp++
				}
			}
			if !found {
				t.Errorf("%s (%s) port %s: neighbour %s (%s) port %s not found in %+v", a.Name, a.IP, end[1], b.Name, b.IP, end[3], a.LLDP)
			}
		}
	}
	if fqdnNamed == 0 || cdp == 0 {
		t.Errorf("lab seed 11 has %d link ends to FQDN-named devices and %d CDP entries: the case is not exercised", fqdnNamed, cdp)
	}
}
