package lab

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
)

// gearSpec is an SNMP device: switch, router or printer.
type gearSpec struct {
	model     *gearModel
	serial    string
	baseMAC   string
	ifaces    []*gearIface
	community string
	v3        bool
	engineID  []byte
	boots     uint32
	upBase    uint32 // centiseconds the device had been up when the lab started
	location  string
	contact   string
	uplinks   []*gearIface // ports usable for LLDP links, in preference order
	linkCount int
}

type gearIface struct {
	index  int
	name   string // ifName
	descr  string // ifDescr
	alias  string
	ifType int
	speed  int64 // bit/s
	mac    string
	up     bool
	admin  bool
	addrs  []netip.Prefix
	lldp   *lldpRemote
}

type lldpRemote struct {
	sysName   string
	sysDescr  string
	chassis   []byte
	portID    string
	portDescr string
	mgmtIP    netip.Addr
	remIndex  int
	host      *host // the neighbour
}

const (
	ifEthernet = 6
	ifLoopback = 24
	ifPropVirt = 53
	ifL3Vlan   = 136
	ifOther    = 1
)

func (p *plan) planGear(h *host, r *rand.Rand, creds *credentialPools, counters map[string]int) {
	var model *gearModel
	var prefix string
	switch h.class {
	case ClassSwitch:
		model = switchModels[pickWeighted(r, switchWeights)]
		prefix = "sw"
	case ClassRouter:
		model = routerModels[pickWeighted(r, routerWeights)]
		prefix = "rtr"
	default:
		model = printerModels[pickWeighted(r, printerWeights)]
		prefix = "prn"
	}
	counters[prefix]++
	site := sites[p.site]
	h.name = fmt.Sprintf("%s-%s%02d", site.code, prefix, counters[prefix])
	g := &gearSpec{model: model, serial: serialFor(r, model.serialKind)}
	h.gear = g
	g.baseMAC = macFor(p.cfg.Seed, model.oui, h.idx, 0)
	g.ifaces, g.uplinks = buildInterfaces(p.cfg.Seed, model, h, p.prefix.Bits())
	g.boots = uint32(1 + r.IntN(40))
	g.upBase = uint32(r.IntN(180*24*3600)) * 100
	floor := r.IntN(5) + 1
	g.location = fmt.Sprintf("%s, %s building A, floor %d", site.city, strings.ToUpper(site.code), floor)
	if h.class != ClassPrinter {
		g.location = fmt.Sprintf("%s %s, room %d%02d, rack %c%d", strings.ToUpper(site.code), site.city, floor, 1+r.IntN(20), 'A'+rune(r.IntN(6)), 1+r.IntN(12))
	}
	g.contact = "noc@" + p.domain
	if h.class == ClassPrinter {
		g.contact = "helpdesk@" + p.domain
		g.community = "public"
	} else {
		g.community = creds.communities[pickWeighted(r, creds.commWeights)]
		g.v3 = r.IntN(100) < 50
		if h.idx%7 == 3 {
			// keep a v3 device in small labs too
			g.v3 = true
		}
	}
	// engine ID: RFC 3411 format 3 (MAC) under the vendor's enterprise number
	ent := map[string]uint32{"Cisco": 9, "Aruba": 11, "Juniper Networks": 2636, "MikroTik": 14988, "HP": 11, "Brother": 2435, "Lexmark": 641}[model.vendor]
	g.engineID = append([]byte{0x80 | byte(ent>>24), byte(ent >> 16), byte(ent >> 8), byte(ent), 3}, macBytes(g.baseMAC)...)

	m := &h.m
	m.Vendor, m.Model, m.Serial = model.vendor, model.model, g.serial
	m.OS, m.OSVersion = model.os, model.osVersion
	m.SNMP = true
	m.SysDescr, m.SysObjectID = model.sysDescr, model.sysObjectID
	m.InterfaceCount = len(g.ifaces)
	m.Credentials.SNMP = &SNMPCredential{Community: g.community}
	if g.v3 {
		c := m.Credentials.SNMP
		c.Username, c.AuthProtocol, c.AuthPassword = creds.v3User, "SHA", creds.v3Auth
		c.PrivProtocol, c.PrivPassword = "AES", creds.v3Priv
		c.EngineID = hex.EncodeToString(g.engineID)
	}
	if h.class == ClassPrinter {
		h.services = []service{{port: 9100, kind: svcJetDirect}}
	} else {
		if model.ssh != "" && r.IntN(100) < 70 {
			h.services = append(h.services, service{port: 22, kind: svcSSH})
			h.sshVersion = model.ssh
			h.hostKey = hostKeyFor(p.cfg.Seed, h.idx)
		}
		if model.telnet && r.IntN(100) < 40 {
			h.services = append(h.services, service{port: 23, kind: svcTelnet})
		}
	}
}

// buildInterfaces lays out a device's ifTable as the real model numbers it,
// and returns the ports usable for links to other lab devices in preference
// order. The management address goes on the management/VLAN interface.
func buildInterfaces(seed int64, model *gearModel, h *host, bits int) ([]*gearIface, []*gearIface) {
	var ifs []*gearIface
	var uplinkNames []string
	r := rng(seed, "ifaces", h.idx)
	add := func(index int, name, descr string, t int, speed int64) *gearIface {
		f := &gearIface{index: index, name: name, descr: descr, ifType: t, speed: speed, admin: true}
		if t == ifEthernet {
			f.mac = macFor(seed, model.oui, h.idx, len(ifs)+1)
			f.up = r.IntN(100) < 55
		} else {
			f.up = true
		}
		ifs = append(ifs, f)
		return f
	}
	mgmt := netip.PrefixFrom(h.ip, bits)
	const g1, g10 = 1_000_000_000, 10_000_000_000
	switch model.layout {
	case "cat9k":
		add(1, "Gi0/0", "GigabitEthernet0/0", ifEthernet, g1).up = false
		for i := 1; i <= 48; i++ {
			add(i+1, fmt.Sprintf("Gi1/0/%d", i), fmt.Sprintf("GigabitEthernet1/0/%d", i), ifEthernet, g1)
		}
		for i := 1; i <= 4; i++ {
			add(49+i, fmt.Sprintf("Te1/1/%d", i), fmt.Sprintf("TenGigabitEthernet1/1/%d", i), ifEthernet, g10)
			uplinkNames = append(uplinkNames, fmt.Sprintf("Te1/1/%d", i))
		}
		for i := 48; i >= 41; i-- {
			uplinkNames = append(uplinkNames, fmt.Sprintf("Gi1/0/%d", i))
		}
		add(54, "Vl1", "Vlan1", ifL3Vlan, g1).addrs = []netip.Prefix{mgmt}
		add(55, "Nu0", "Null0", ifOther, 0)
	case "c2960":
		add(1, "Vl1", "Vlan1", ifPropVirt, g1).addrs = []netip.Prefix{mgmt}
		add(2, "Fa0", "FastEthernet0", ifEthernet, 100_000_000).up = false
		for i := 1; i <= 28; i++ {
			add(10100+i, fmt.Sprintf("Gi1/0/%d", i), fmt.Sprintf("GigabitEthernet1/0/%d", i), ifEthernet, g1)
		}
		for _, i := range []int{25, 26, 27, 28, 24, 23, 22, 21} {
			uplinkNames = append(uplinkNames, fmt.Sprintf("Gi1/0/%d", i))
		}
	case "aruba":
		for i := 1; i <= 28; i++ {
			add(i, fmt.Sprintf("%d", i), fmt.Sprintf("%d", i), ifEthernet, g1)
		}
		for _, i := range []int{25, 26, 27, 28, 24, 23, 22, 21} {
			uplinkNames = append(uplinkNames, fmt.Sprintf("%d", i))
		}
		add(4097, "DEFAULT_VLAN", "DEFAULT_VLAN", ifPropVirt, 0).addrs = []netip.Prefix{mgmt}
	case "ex2300":
		add(33, "me0", "me0", ifEthernet, g1).up = false
		for i := 0; i < 24; i++ {
			add(513+i, fmt.Sprintf("ge-0/0/%d", i), fmt.Sprintf("ge-0/0/%d", i), ifEthernet, g1)
		}
		for i := 0; i < 4; i++ {
			add(537+i, fmt.Sprintf("xe-0/1/%d", i), fmt.Sprintf("xe-0/1/%d", i), ifEthernet, g10)
			uplinkNames = append(uplinkNames, fmt.Sprintf("xe-0/1/%d", i))
		}
		for i := 23; i >= 16; i-- {
			uplinkNames = append(uplinkNames, fmt.Sprintf("ge-0/0/%d", i))
		}
		add(34, "vme", "vme", ifPropVirt, g1).addrs = []netip.Prefix{mgmt}
		add(16, "lo0", "lo0", ifLoopback, 0)
	case "isr":
		for i := 0; i < 3; i++ {
			f := add(1+i, fmt.Sprintf("Gi0/0/%d", i), fmt.Sprintf("GigabitEthernet0/0/%d", i), ifEthernet, g1)
			if i == 0 {
				f.addrs, f.up, f.alias = []netip.Prefix{mgmt}, true, "LAN"
			} else {
				f.addrs = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + i), byte(h.idx >> 8), byte(h.idx)}), 30)}
				uplinkNames = append(uplinkNames, f.name)
			}
		}
		add(4, "Gi0", "GigabitEthernet0", ifEthernet, g1).up = false
		for i := 0; i < 8; i++ {
			add(5+i, fmt.Sprintf("Gi0/1/%d", i), fmt.Sprintf("GigabitEthernet0/1/%d", i), ifEthernet, g1)
			uplinkNames = append(uplinkNames, fmt.Sprintf("Gi0/1/%d", i))
		}
		add(13, "Lo0", "Loopback0", ifLoopback, 0).addrs = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 255, byte(h.idx >> 8), byte(h.idx)}), 32)}
		add(14, "Nu0", "Null0", ifOther, 0)
	case "srx":
		for i := 0; i < 8; i++ {
			f := add(513+i, fmt.Sprintf("ge-0/0/%d", i), fmt.Sprintf("ge-0/0/%d", i), ifEthernet, g1)
			if i == 0 {
				f.addrs, f.up = []netip.Prefix{mgmt}, true
			} else {
				uplinkNames = append(uplinkNames, f.name)
			}
		}
		add(16, "lo0", "lo0", ifLoopback, 0)
		add(6, "fxp2", "fxp2", ifEthernet, g1).up = false
	case "ccr":
		for i := 1; i <= 2; i++ {
			uplinkNames = append(uplinkNames, fmt.Sprintf("sfp-sfpplus%d", i))
		}
		for i := 1; i <= 16; i++ {
			f := add(i, fmt.Sprintf("ether%d", i), fmt.Sprintf("ether%d", i), ifEthernet, g1)
			if i == 1 {
				f.addrs, f.up = []netip.Prefix{mgmt}, true
			} else {
				uplinkNames = append(uplinkNames, f.name)
			}
		}
		for i := 1; i <= 2; i++ {
			add(16+i, fmt.Sprintf("sfp-sfpplus%d", i), fmt.Sprintf("sfp-sfpplus%d", i), ifEthernet, g10)
		}
		add(19, "lo", "lo", ifLoopback, 0)
	case "printer":
		descr := map[string]string{"Brother": "Brother Ethernet", "Lexmark": "Lexmark Network Interface"}[model.vendor]
		if descr == "" {
			descr = "HP ETHERNET MULTI-ENVIRONMENT"
		}
		f := add(1, "eth0", descr, ifEthernet, g1)
		f.addrs, f.up = []netip.Prefix{mgmt}, true
		add(2, "lo0", "Software Loopback Interface", ifLoopback, 0)
	}
	slices.SortFunc(ifs, func(a, b *gearIface) int { return a.index - b.index })
	var uplinks []*gearIface
	for _, n := range uplinkNames {
		for _, f := range ifs {
			if f.name == n {
				uplinks = append(uplinks, f)
			}
		}
	}
	return ifs, uplinks
}

func (g *gearSpec) freeUplink() *gearIface {
	for _, f := range g.uplinks {
		if f.lldp == nil {
			return f
		}
	}
	return nil
}

// planTopology wires routers and switches into a tree (routers to the first
// router, core switches to routers, access switches to core switches) and
// records each link in both ends' LLDP tables and in the manifest.
func (p *plan) planTopology() {
	var routers, switches []*host
	for _, h := range p.hosts {
		switch h.class {
		case ClassRouter:
			routers = append(routers, h)
		case ClassSwitch:
			switches = append(switches, h)
		}
	}
	r := rng(p.cfg.Seed, "topology", 0)
	link := func(child, parent *host) bool {
		a, b := child.gear.freeUplink(), parent.gear.freeUplink()
		if a == nil || b == nil {
			return false
		}
		remote := func(h *host, f *gearIface, idx int) *lldpRemote {
			return &lldpRemote{sysName: h.name, sysDescr: h.gear.model.sysDescr, chassis: macBytes(h.gear.baseMAC),
				portID: f.name, portDescr: f.descr, mgmtIP: h.ip, remIndex: idx, host: h}
		}
		child.gear.linkCount++
		parent.gear.linkCount++
		a.lldp = remote(parent, b, child.gear.linkCount)
		b.lldp = remote(child, a, parent.gear.linkCount)
		a.up, b.up = true, true
		a.alias = "uplink to " + parent.name
		b.alias = "to " + child.name
		p.neighbours = append(p.neighbours, Neighbour{A: child.ip.String(), APort: a.name, B: parent.ip.String(), BPort: b.name})
		return true
	}
	// try parents in the given order, then any earlier device with a free port
	attach := func(child *host, preferred []*host, fallback []*host) {
		for _, par := range preferred {
			if par != child && link(child, par) {
				return
			}
		}
		for _, par := range fallback {
			if par != child && link(child, par) {
				return
			}
		}
	}
	for i := 1; i < len(routers); i++ {
		attach(routers[i], []*host{routers[0]}, routers[:i])
	}
	nCore := (len(switches) + 5) / 6
	for i, sw := range switches {
		switch {
		case i < nCore && len(routers) > 0:
			attach(sw, []*host{routers[i%len(routers)]}, append(slices.Clone(routers), switches[:i]...))
		case i < nCore:
			if i > 0 {
				attach(sw, []*host{switches[0]}, switches[:i])
			}
		default:
			core := switches[:nCore]
			attach(sw, []*host{core[r.IntN(len(core))]}, switches[:i])
		}
	}
	for _, h := range p.hosts {
		if h.gear == nil {
			continue
		}
		for _, f := range h.gear.ifaces {
			ifc := Interface{Index: f.index, Name: f.name, Descr: f.descr, Alias: f.alias, MAC: f.mac, Up: f.up, Speed: f.speed, IfType: f.ifType}
			for _, a := range f.addrs {
				ifc.IPv4 = append(ifc.IPv4, a.String())
			}
			h.m.Interfaces = append(h.m.Interfaces, ifc)
			if f.mac != "" {
				h.m.MACs = append(h.m.MACs, f.mac)
			}
		}
	}
}
