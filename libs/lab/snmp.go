package lab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gosnmp/gosnmp"
)

// The lab's SNMP agents: our own, on gosnmp's packet types. v1/v2c with a
// community (wrong community: silence, like real agents); v3 USM with one
// user at authPriv (SHA/AES-128): engine ID discovery answered with a
// usmStatsUnknownEngineIDs report, authentication and privacy through
// gosnmp's USM code, errors reported as usmStats reports. The USM time
// window is not enforced.

type mibEntry struct {
	oid []uint32
	typ gosnmp.Asn1BER
	val any
}

var oidSysUpTime = []uint32{1, 3, 6, 1, 2, 1, 1, 3, 0}

func parseOID(s string) []uint32 {
	s = strings.TrimPrefix(s, ".")
	parts := strings.Split(s, ".")
	out := make([]uint32, 0, len(parts))
	for _, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return nil
		}
		out = append(out, uint32(n))
	}
	return out
}

func oidString(o []uint32) string {
	var b strings.Builder
	for _, n := range o {
		b.WriteByte('.')
		b.WriteString(strconv.FormatUint(uint64(n), 10))
	}
	return b.String()
}

func cmpOID(a, b []uint32) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return len(a) - len(b)
}

// buildMIB lays out everything the device answers, sorted by OID.
func (h *host) buildMIB(seed int64) []mibEntry {
	g := h.gear
	var mib []mibEntry
	add := func(oid string, typ gosnmp.Asn1BER, val any) {
		mib = append(mib, mibEntry{parseOID(oid), typ, val})
	}
	idx := func(base string, i int) string { return base + "." + strconv.Itoa(i) }
	sysName := h.name
	if g.model.vendor == "Cisco" {
		sysName = h.fqdn
	}
	add("1.3.6.1.2.1.1.1.0", gosnmp.OctetString, g.model.sysDescr)
	add("1.3.6.1.2.1.1.2.0", gosnmp.ObjectIdentifier, g.model.sysObjectID)
	add("1.3.6.1.2.1.1.3.0", gosnmp.TimeTicks, nil) // computed per request
	add("1.3.6.1.2.1.1.4.0", gosnmp.OctetString, g.contact)
	add("1.3.6.1.2.1.1.5.0", gosnmp.OctetString, sysName)
	add("1.3.6.1.2.1.1.6.0", gosnmp.OctetString, g.location)
	add("1.3.6.1.2.1.1.7.0", gosnmp.Integer, g.model.services)
	add("1.3.6.1.2.1.2.1.0", gosnmp.Integer, len(g.ifaces))
	r := rng(seed, "counters", h.idx)
	for _, f := range g.ifaces {
		status := 2
		if f.up {
			status = 1
		}
		var mac []byte
		if f.mac != "" {
			mac = macBytes(f.mac)
		}
		speed := uint32(min(f.speed, 4294967295))
		in, out := uint32(0), uint32(0)
		if f.up {
			in, out = r.Uint32(), r.Uint32()
		}
		t := "1.3.6.1.2.1.2.2.1."
		add(idx(t+"1", f.index), gosnmp.Integer, f.index)
		add(idx(t+"2", f.index), gosnmp.OctetString, f.descr)
		add(idx(t+"3", f.index), gosnmp.Integer, f.ifType)
		add(idx(t+"4", f.index), gosnmp.Integer, map[bool]int{true: 1500, false: 65535}[f.ifType == ifEthernet || f.ifType == ifL3Vlan || f.ifType == ifPropVirt])
		add(idx(t+"5", f.index), gosnmp.Gauge32, speed)
		add(idx(t+"6", f.index), gosnmp.OctetString, mac)
		add(idx(t+"7", f.index), gosnmp.Integer, map[bool]int{true: 1, false: 2}[f.admin])
		add(idx(t+"8", f.index), gosnmp.Integer, status)
		add(idx(t+"9", f.index), gosnmp.TimeTicks, uint32(r.IntN(1000000)))
		add(idx(t+"10", f.index), gosnmp.Counter32, in)
		add(idx(t+"16", f.index), gosnmp.Counter32, out)
		x := "1.3.6.1.2.1.31.1.1.1."
		add(idx(x+"1", f.index), gosnmp.OctetString, f.name)
		add(idx(x+"6", f.index), gosnmp.Counter64, uint64(in)*uint64(1+r.IntN(50)))
		add(idx(x+"10", f.index), gosnmp.Counter64, uint64(out)*uint64(1+r.IntN(50)))
		add(idx(x+"15", f.index), gosnmp.Gauge32, uint32(f.speed/1_000_000))
		add(idx(x+"18", f.index), gosnmp.OctetString, f.alias)
	}
	// A router forwards and has a routing table; so does an L3 switch (sysServices has the
	// layer-3 bit), which is told from a router by its bridge MIB, as on real gear.
	forwarding, routes := 2, 0
	if h.class == ClassRouter || (h.class == ClassSwitch && g.model.services&4 != 0) {
		forwarding = 1
		for _, f := range g.ifaces {
			routes += len(f.addrs) // one connected route per address
		}
		routes++ // the default route
	}
	add("1.3.6.1.2.1.4.1.0", gosnmp.Integer, forwarding)
	if routes > 0 {
		add("1.3.6.1.2.1.4.24.3.0", gosnmp.Gauge32, uint32(routes)) // ipCidrRouteNumber
		add("1.3.6.1.2.1.4.24.6.0", gosnmp.Gauge32, uint32(routes)) // inetCidrRouteNumber
	}
	if h.class == ClassSwitch {
		// BRIDGE-MIB dot1dBase: bridge address, number of ports, transparent-only; each
		// bridge port is an Ethernet interface (dot1dBasePortIfIndex).
		b := "1.3.6.1.2.1.17.1."
		add(b+"1.0", gosnmp.OctetString, macBytes(g.baseMAC))
		port := 0
		for _, f := range g.ifaces {
			if f.ifType == ifEthernet {
				port++
				add(idx(b+"4.1.1", port), gosnmp.Integer, port)
				add(idx(b+"4.1.2", port), gosnmp.Integer, f.index)
			}
		}
		add(b+"2.0", gosnmp.Integer, port)
		add(b+"3.0", gosnmp.Integer, 2)
	}
	for _, f := range g.ifaces {
		for _, a := range f.addrs {
			ip := a.Addr().String()
			mask := net.IP(net.CIDRMask(a.Bits(), 32)).String()
			t := "1.3.6.1.2.1.4.20.1."
			add(t+"1."+ip, gosnmp.IPAddress, ip)
			add(t+"2."+ip, gosnmp.Integer, f.index)
			add(t+"3."+ip, gosnmp.IPAddress, mask)
			add(t+"4."+ip, gosnmp.Integer, 1)
		}
	}
	if h.class == ClassPrinter {
		add("1.3.6.1.2.1.25.3.2.1.3.1", gosnmp.OctetString, g.model.model)
		add("1.3.6.1.2.1.43.5.1.1.16.1", gosnmp.OctetString, g.model.model)
		add("1.3.6.1.2.1.43.5.1.1.17.1", gosnmp.OctetString, g.serial)
	} else {
		e := "1.3.6.1.2.1.47.1.1.1.1."
		add(e+"2.1", gosnmp.OctetString, g.model.vendor+" "+g.model.model+" chassis")
		add(e+"5.1", gosnmp.Integer, 3) // chassis
		add(e+"7.1", gosnmp.OctetString, "Chassis")
		add(e+"10.1", gosnmp.OctetString, g.model.osVersion)
		add(e+"11.1", gosnmp.OctetString, g.serial)
		add(e+"12.1", gosnmp.OctetString, g.model.vendor)
		add(e+"13.1", gosnmp.OctetString, g.model.model)
		// LLDP-MIB: local system and ports, remote systems
		l := "1.0.8802.1.1.2.1."
		add(l+"3.1.0", gosnmp.Integer, 4) // chassis ID is a MAC
		add(l+"3.2.0", gosnmp.OctetString, macBytes(g.baseMAC))
		add(l+"3.3.0", gosnmp.OctetString, h.name)
		add(l+"3.4.0", gosnmp.OctetString, g.model.sysDescr)
		for _, f := range g.ifaces {
			if f.ifType != ifEthernet {
				continue
			}
			add(idx(l+"3.7.1.2", f.index), gosnmp.Integer, 5) // interfaceName
			add(idx(l+"3.7.1.3", f.index), gosnmp.OctetString, f.name)
			add(idx(l+"3.7.1.4", f.index), gosnmp.OctetString, f.descr)
		}
		for _, f := range g.ifaces {
			rem := f.lldp
			if rem == nil {
				continue
			}
			ri := fmt.Sprintf(".0.%d.%d", f.index, rem.remIndex)
			t := l + "4.1.1."
			add(t+"4"+ri, gosnmp.Integer, 4)
			add(t+"5"+ri, gosnmp.OctetString, rem.chassis)
			add(t+"6"+ri, gosnmp.Integer, 5)
			add(t+"7"+ri, gosnmp.OctetString, rem.portID)
			add(t+"8"+ri, gosnmp.OctetString, rem.portDescr)
			add(t+"9"+ri, gosnmp.OctetString, rem.sysName)
			add(t+"10"+ri, gosnmp.OctetString, rem.sysDescr)
			ma := ri + ".1.4." + rem.mgmtIP.String()
			add(l+"4.2.1.3"+ma, gosnmp.Integer, 2) // ifIndex
			add(l+"4.2.1.4"+ma, gosnmp.Integer, 0)
			add(l+"4.2.1.5"+ma, gosnmp.ObjectIdentifier, ".0.0")
		}
		// CISCO-CDP-MIB cdpCacheTable (index ifIndex.deviceIndex): Cisco devices see their
		// Cisco neighbours over CDP too; the device id is the neighbour's FQDN, as IOS
		// reports a device with a domain name configured.
		if g.model.vendor == "Cisco" {
			for _, f := range g.ifaces {
				rem := f.lldp
				if rem == nil || rem.host == nil || rem.host.gear == nil || rem.host.gear.model.vendor != "Cisco" {
					continue
				}
				ci := fmt.Sprintf(".%d.%d", f.index, rem.remIndex)
				c := "1.3.6.1.4.1.9.9.23.1.2.1.1."
				add(c+"3"+ci, gosnmp.Integer, 1) // ip
				add(c+"4"+ci, gosnmp.OctetString, rem.mgmtIP.AsSlice())
				add(c+"5"+ci, gosnmp.OctetString, rem.host.gear.model.sysDescr)
				add(c+"6"+ci, gosnmp.OctetString, rem.host.fqdn)
				add(c+"7"+ci, gosnmp.OctetString, rem.portID)
				add(c+"8"+ci, gosnmp.OctetString, "cisco "+rem.host.gear.model.model)
			}
		}
	}
	slices.SortFunc(mib, func(a, b mibEntry) int { return cmpOID(a.oid, b.oid) })
	return mib
}

// snmpAgent serves one device's UDP port 161.
type snmpAgent struct {
	lab  *Lab
	h    *host
	mib  []mibEntry
	dec  *gosnmp.GoSNMP
	v3   *gosnmp.GoSNMP // nil until the first v3 message, or when the device has no v3 user
	usm  *gosnmp.UsmSecurityParameters
	salt uint64
}

func (a *snmpAgent) uptime() uint32 {
	return a.h.gear.upBase + uint32(time.Since(a.lab.started)/(10*time.Millisecond))
}

func (a *snmpAgent) lookup(oid []uint32) (int, bool) {
	return slices.BinarySearchFunc(a.mib, oid, func(e mibEntry, t []uint32) int { return cmpOID(e.oid, t) })
}

func (a *snmpAgent) pdu(e *mibEntry) gosnmp.SnmpPDU {
	v := e.val
	if e.typ == gosnmp.TimeTicks && v == nil {
		v = a.uptime()
	}
	return gosnmp.SnmpPDU{Name: oidString(e.oid), Type: e.typ, Value: v}
}

// next returns the first entry after oid, or nil at the end of the MIB.
func (a *snmpAgent) next(oid []uint32) *mibEntry {
	i, found := a.lookup(oid)
	if found {
		i++
	}
	if i >= len(a.mib) {
		return nil
	}
	return &a.mib[i]
}

// respond answers a decoded request; nil means no answer.
func (a *snmpAgent) respond(req *gosnmp.SnmpPacket, maxSize int) *gosnmp.SnmpPacket {
	resp := &gosnmp.SnmpPacket{Version: req.Version, Community: req.Community, PDUType: gosnmp.GetResponse, RequestID: req.RequestID}
	v1 := req.Version == gosnmp.Version1
	switch req.PDUType {
	case gosnmp.GetRequest:
		for i, v := range req.Variables {
			oid := parseOID(v.Name)
			if k, ok := a.lookup(oid); ok {
				resp.Variables = append(resp.Variables, a.pdu(&a.mib[k]))
				continue
			}
			if v1 {
				return v1Error(resp, req, i)
			}
			// an existing object without this instance, or no such object at all
			typ := gosnmp.NoSuchObject
			if len(oid) > 1 {
				parent := oid[:len(oid)-1]
				if n := a.next(parent); n != nil && len(n.oid) > len(parent) && cmpOID(n.oid[:len(parent)], parent) == 0 {
					typ = gosnmp.NoSuchInstance
				}
			}
			resp.Variables = append(resp.Variables, gosnmp.SnmpPDU{Name: v.Name, Type: typ})
		}
	case gosnmp.GetNextRequest:
		for i, v := range req.Variables {
			n := a.next(parseOID(v.Name))
			if n == nil {
				if v1 {
					return v1Error(resp, req, i)
				}
				resp.Variables = append(resp.Variables, gosnmp.SnmpPDU{Name: v.Name, Type: gosnmp.EndOfMibView})
				continue
			}
			resp.Variables = append(resp.Variables, a.pdu(n))
		}
	case gosnmp.GetBulkRequest:
		if v1 {
			return nil
		}
		nonRep := min(int(req.NonRepeaters), len(req.Variables))
		maxRep := int(min(req.MaxRepetitions, 1000))
		for {
			resp.Variables = resp.Variables[:0]
			for _, v := range req.Variables[:nonRep] {
				if n := a.next(parseOID(v.Name)); n != nil {
					resp.Variables = append(resp.Variables, a.pdu(n))
				} else {
					resp.Variables = append(resp.Variables, gosnmp.SnmpPDU{Name: v.Name, Type: gosnmp.EndOfMibView})
				}
			}
			cur := make([][]uint32, 0, len(req.Variables)-nonRep)
			for _, v := range req.Variables[nonRep:] {
				cur = append(cur, parseOID(v.Name))
			}
			for rep := 0; rep < maxRep && len(cur) > 0; rep++ {
				ended := true
				for j, o := range cur {
					n := a.next(o)
					if n == nil {
						resp.Variables = append(resp.Variables, gosnmp.SnmpPDU{Name: oidString(o), Type: gosnmp.EndOfMibView})
						continue
					}
					ended = false
					cur[j] = n.oid
					resp.Variables = append(resp.Variables, a.pdu(n))
				}
				if ended {
					break
				}
			}
			// stay within what the manager can receive: fewer repetitions if needed
			if maxRep <= 1 || estimateSize(resp.Variables) <= maxSize {
				break
			}
			maxRep /= 2
		}
	case gosnmp.SetRequest:
		resp.Variables = req.Variables
		if v1 {
			return v1Error(resp, req, 0)
		}
		resp.Error, resp.ErrorIndex = gosnmp.NoAccess, 1
	default:
		return nil
	}
	return resp
}

func v1Error(resp, req *gosnmp.SnmpPacket, i int) *gosnmp.SnmpPacket {
	resp.Variables = req.Variables
	resp.Error = gosnmp.NoSuchName
	resp.ErrorIndex = uint8(min(i+1, 255))
	return resp
}

// estimateSize is an upper bound of the encoded varbind list.
func estimateSize(vars []gosnmp.SnmpPDU) int {
	n := 100
	for _, v := range vars {
		n += len(v.Name)/2 + 12
		switch x := v.Value.(type) {
		case string:
			n += len(x)
		case []byte:
			n += len(x)
		default:
			n += 10
		}
	}
	return n
}

// handle processes one datagram and returns the reply, or nil.
func (a *snmpAgent) handle(pkt []byte) []byte {
	ver, ok := peekSNMPVersion(pkt)
	if !ok {
		return nil
	}
	if ver == 3 {
		return a.handleV3(pkt)
	}
	if ver > 1 {
		return nil
	}
	req, err := a.dec.SnmpDecodePacket(pkt)
	if err != nil || req.Community != a.h.gear.community {
		return nil
	}
	resp := a.respond(req, 65000)
	if resp == nil {
		return nil
	}
	out, err := resp.MarshalMsg()
	if err != nil {
		a.lab.log.Debug("snmp marshal", "host", a.h.ip, "err", err)
		return nil
	}
	return out
}

var (
	usmUnsupportedSecLevels = ".1.3.6.1.6.3.15.1.1.1.0"
	usmUnknownUserNames     = ".1.3.6.1.6.3.15.1.1.3.0"
	usmUnknownEngineIDs     = ".1.3.6.1.6.3.15.1.1.4.0"
	usmWrongDigests         = ".1.3.6.1.6.3.15.1.1.5.0"
	usmDecryptionErrors     = ".1.3.6.1.6.3.15.1.1.6.0"
)

func (a *snmpAgent) engineTime() uint32 {
	return a.h.gear.upBase/100 + uint32(time.Since(a.lab.started)/time.Second)
}

func (a *snmpAgent) handleV3(pkt []byte) []byte {
	hd, err := parseV3Header(pkt)
	if err != nil || hd.secModel != 3 {
		return nil
	}
	g := a.h.gear
	report := func(oid string, requestID uint32, counter uint32) []byte {
		if hd.flags&4 == 0 { // not reportable
			return nil
		}
		resp := &gosnmp.SnmpPacket{
			Version: gosnmp.Version3, MsgFlags: gosnmp.NoAuthNoPriv, SecurityModel: gosnmp.UserSecurityModel,
			SecurityParameters: &gosnmp.UsmSecurityParameters{
				AuthoritativeEngineID: string(g.engineID), AuthoritativeEngineBoots: g.boots, AuthoritativeEngineTime: a.engineTime(),
				UserName: hd.user,
			},
			PDUType: gosnmp.Report, MsgID: hd.msgID, RequestID: requestID, ContextEngineID: string(g.engineID),
			Variables: []gosnmp.SnmpPDU{{Name: oid, Type: gosnmp.Counter32, Value: counter}},
		}
		out, err := resp.MarshalMsg()
		if err != nil {
			return nil
		}
		return out
	}
	ours := bytes.Equal(hd.engineID, g.engineID)
	if hd.flags&1 == 0 { // noAuthNoPriv: discovery, or a user below its level
		switch {
		case len(hd.engineID) == 0 || !ours:
			return report(usmUnknownEngineIDs, hd.requestID, 1)
		case !g.v3 || hd.user != a.usm.UserName:
			return report(usmUnknownUserNames, hd.requestID, 1)
		default:
			return report(usmUnsupportedSecLevels, hd.requestID, 1)
		}
	}
	if !ours {
		return report(usmUnknownEngineIDs, 0, 1)
	}
	if !g.v3 || hd.user != a.usm.UserName {
		return report(usmUnknownUserNames, 0, 1)
	}
	if hd.flags&2 == 0 {
		return report(usmUnsupportedSecLevels, 0, 1)
	}
	req, err := a.v3.UnmarshalTrap(bytes.Clone(pkt), true)
	if err != nil {
		if strings.Contains(err.Error(), "authentic") {
			return report(usmWrongDigests, 0, 1)
		}
		return report(usmDecryptionErrors, 0, 1)
	}
	maxSize := int(hd.maxSize)
	if maxSize <= 0 || maxSize > 65000 {
		maxSize = 65000
	}
	resp := a.respond(req, maxSize-200)
	if resp == nil {
		return nil
	}
	a.salt++
	salt := make([]byte, 8)
	for i := range salt {
		salt[i] = byte(a.salt >> (56 - 8*i))
	}
	resp.Version = gosnmp.Version3
	resp.MsgFlags = gosnmp.AuthPriv
	resp.SecurityModel = gosnmp.UserSecurityModel
	resp.MsgID = hd.msgID
	resp.ContextEngineID = string(g.engineID)
	resp.ContextName = req.ContextName
	resp.SecurityParameters = &gosnmp.UsmSecurityParameters{
		AuthoritativeEngineID: string(g.engineID), AuthoritativeEngineBoots: g.boots, AuthoritativeEngineTime: a.engineTime(),
		UserName: a.usm.UserName, AuthenticationProtocol: a.usm.AuthenticationProtocol, PrivacyProtocol: a.usm.PrivacyProtocol,
		SecretKey: a.usm.SecretKey, PrivacyKey: a.usm.PrivacyKey, PrivacyParameters: salt,
	}
	out, err := resp.MarshalMsg()
	if err != nil {
		a.lab.log.Debug("snmp v3 marshal", "host", a.h.ip, "err", err)
		return nil
	}
	return out
}

// peekSNMPVersion reads the version field of an SNMP message.
func peekSNMPVersion(b []byte) (int, bool) {
	r := berReader{b: b}
	seq, ok := r.next(0x30)
	if !ok {
		return 0, false
	}
	v, ok := seq.int()
	return int(v), ok
}

type v3Header struct {
	msgID     uint32
	maxSize   int64
	flags     byte
	secModel  int64
	engineID  []byte
	user      string
	requestID uint32 // only for plaintext scoped PDUs
}

func parseV3Header(b []byte) (*v3Header, error) {
	bad := errors.New("malformed SNMPv3 message")
	r := berReader{b: b}
	msg, ok := r.next(0x30)
	if !ok {
		return nil, bad
	}
	if v, ok := msg.int(); !ok || v != 3 {
		return nil, bad
	}
	hdr, ok := msg.next(0x30)
	if !ok {
		return nil, bad
	}
	h := &v3Header{}
	id, ok1 := hdr.int()
	size, ok2 := hdr.int()
	flags, ok3 := hdr.next(0x04)
	model, ok4 := hdr.int()
	if !ok1 || !ok2 || !ok3 || !ok4 || len(flags.b) != 1 {
		return nil, bad
	}
	h.msgID, h.maxSize, h.flags, h.secModel = uint32(id), size, flags.b[0], model
	sp, ok := msg.next(0x04)
	if !ok {
		return nil, bad
	}
	usm, ok := sp.next(0x30)
	if !ok {
		return nil, bad
	}
	eid, ok := usm.next(0x04)
	if !ok {
		return nil, bad
	}
	h.engineID = eid.b
	usm.int()
	usm.int()
	user, ok := usm.next(0x04)
	if !ok {
		return nil, bad
	}
	h.user = string(user.b)
	if h.flags&2 == 0 { // plaintext scoped PDU: pick up the request ID for reports
		if spdu, ok := msg.next(0x30); ok {
			spdu.next(0x04)
			spdu.next(0x04)
			if len(spdu.b) > 0 {
				if p, ok := spdu.next(spdu.b[0]); ok {
					if rid, ok := p.int(); ok {
						h.requestID = uint32(rid)
					}
				}
			}
		}
	}
	return h, nil
}

// berReader walks definite-length BER.
type berReader struct{ b []byte }

func (r *berReader) next(tag byte) (berReader, bool) {
	if len(r.b) < 2 || r.b[0] != tag {
		return berReader{}, false
	}
	l := int(r.b[1])
	off := 2
	if l&0x80 != 0 {
		n := l & 0x7f
		if n == 0 || n > 3 || len(r.b) < 2+n {
			return berReader{}, false
		}
		l = 0
		for _, c := range r.b[2 : 2+n] {
			l = l<<8 | int(c)
		}
		off += n
	}
	if len(r.b) < off+l {
		return berReader{}, false
	}
	out := berReader{b: r.b[off : off+l]}
	r.b = r.b[off+l:]
	return out, true
}

func (r *berReader) int() (int64, bool) {
	v, ok := r.next(0x02)
	if !ok || len(v.b) == 0 || len(v.b) > 8 {
		return 0, false
	}
	n := int64(int8(v.b[0]))
	for _, c := range v.b[1:] {
		n = n<<8 | int64(c)
	}
	return n, true
}
