package lab

import (
	"bufio"
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
)

// The lab's LDAP server, on go-asn1-ber (the BER layer of go-ldap). It is
// ours rather than gldap's because the lab must close idle client
// connections on Close (gldap's Server.Stop waits for them forever) and bind
// its own listeners. It speaks LDAPv3: simple bind, search (base/one/sub,
// filters and/or/not/equality/substrings/present/>=/<=, size limit, attribute
// selection, paged results), StartTLS, WhoAmI; writes are refused.
// Like a 389 Directory Server with nsslapd-allow-anonymous-access: rootdse,
// anonymous clients may read the root DSE only.

const (
	ldapBindRequest       = 0
	ldapBindResponse      = 1
	ldapUnbindRequest     = 2
	ldapSearchRequest     = 3
	ldapSearchResultEntry = 4
	ldapSearchResultDone  = 5
	ldapAbandonRequest    = 16
	ldapExtendedRequest   = 23
	ldapExtendedResponse  = 24

	ldapSuccess                 = 0
	ldapOperationsError         = 1
	ldapProtocolError           = 2
	ldapSizeLimitExceeded       = 4
	ldapAuthMethodNotSupported  = 7
	ldapNoSuchObject            = 32
	ldapInappropriateAuth       = 48
	ldapInvalidCredentials      = 49
	ldapInsufficientAccessRight = 50
	ldapUnwillingToPerform      = 53

	oidStartTLS = "1.3.6.1.4.1.1466.20037"
	oidWhoAmI   = "1.3.6.1.4.1.4203.1.11.3"
	oidPaging   = "1.2.840.113556.1.4.319"
)

type ldapConn struct {
	lab   *Lab
	h     *host
	conn  net.Conn
	r     *bufio.Reader
	bound string // normalised bind DN, "" when anonymous
	tls   bool
}

func (l *Lab) serveLDAP(c net.Conn, h *host, isTLS bool) {
	lc := &ldapConn{lab: l, h: h, conn: c, r: bufio.NewReader(c), tls: isTLS}
	for {
		c.SetReadDeadline(time.Now().Add(idleTimeout))
		p, err := ber.ReadPacket(lc.r)
		if err != nil {
			return
		}
		if len(p.Children) < 2 {
			return
		}
		id, ok := p.Children[0].Value.(int64)
		if !ok {
			return
		}
		op := p.Children[1]
		if op.ClassType != ber.ClassApplication {
			return
		}
		var controls *ber.Packet
		if len(p.Children) > 2 && p.Children[2].ClassType == ber.ClassContext && p.Children[2].Tag == 0 {
			controls = p.Children[2]
		}
		switch op.Tag {
		case ldapBindRequest:
			lc.bind(id, op)
		case ldapUnbindRequest:
			return
		case ldapSearchRequest:
			lc.search(id, op, controls)
		case ldapAbandonRequest:
		case ldapExtendedRequest:
			if !lc.extended(id, op) {
				return
			}
		default:
			// modify 6, add 8, delete 10, modDN 12, compare 14: the response tag is the request's + 1
			if op.Tag >= 6 && op.Tag <= 14 && op.Tag%2 == 0 {
				lc.write(ldapResult(id, op.Tag+1, ldapInsufficientAccessRight, "", "Insufficient 'write' privilege to the entry."))
				continue
			}
			lc.write(ldapResult(id, ldapExtendedResponse, ldapProtocolError, "", "unsupported operation"))
			return
		}
	}
}

func (lc *ldapConn) write(p *ber.Packet) bool {
	lc.conn.SetWriteDeadline(time.Now().Add(idleTimeout))
	_, err := lc.conn.Write(p.Bytes())
	return err == nil
}

func envelope(id int64) *ber.Packet {
	p := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAP Response")
	p.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "MessageID"))
	return p
}

func resultBody(tag ber.Tag, code int, matched, diag string) *ber.Packet {
	r := ber.Encode(ber.ClassApplication, ber.TypeConstructed, tag, nil, "")
	r.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(code), "resultCode"))
	r.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, matched, "matchedDN"))
	r.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, diag, "diagnosticMessage"))
	return r
}

func ldapResult(id int64, tag ber.Tag, code int, matched, diag string) *ber.Packet {
	p := envelope(id)
	p.AppendChild(resultBody(tag, code, matched, diag))
	return p
}

func octets(p *ber.Packet) string {
	if p == nil {
		return ""
	}
	if p.Data != nil && p.Data.Len() > 0 {
		return p.Data.String()
	}
	if s, ok := p.Value.(string); ok {
		return s
	}
	return string(p.ByteValue)
}

func (lc *ldapConn) bind(id int64, op *ber.Packet) {
	if len(op.Children) < 3 {
		lc.write(ldapResult(id, ldapBindResponse, ldapProtocolError, "", "malformed bind request"))
		return
	}
	if v, _ := op.Children[0].Value.(int64); v != 3 {
		lc.write(ldapResult(id, ldapBindResponse, ldapProtocolError, "", "only LDAPv3 is supported"))
		return
	}
	name := octets(op.Children[1])
	auth := op.Children[2]
	if auth.ClassType != ber.ClassContext || auth.Tag != 0 {
		lc.write(ldapResult(id, ldapBindResponse, ldapAuthMethodNotSupported, "", "only simple binds are supported"))
		return
	}
	password := auth.Data.String()
	lc.bound = ""
	d := lc.lab.plan.dir
	switch {
	case name == "" && password == "":
		lc.write(ldapResult(id, ldapBindResponse, ldapSuccess, "", ""))
	case password == "":
		lc.write(ldapResult(id, ldapBindResponse, ldapUnwillingToPerform, "", "Unauthenticated binds are not allowed"))
	case normDN(name) == normDN(d.bindDN) && password == d.bindPassword:
		lc.bound = normDN(name)
		lc.write(ldapResult(id, ldapBindResponse, ldapSuccess, "", ""))
	default:
		lc.write(ldapResult(id, ldapBindResponse, ldapInvalidCredentials, "", "Invalid credentials"))
	}
}

func (lc *ldapConn) extended(id int64, op *ber.Packet) bool {
	var name string
	if len(op.Children) > 0 {
		name = octets(op.Children[0])
	}
	resp := func(code int, diag string, value *string) *ber.Packet {
		p := envelope(id)
		body := resultBody(ldapExtendedResponse, code, "", diag)
		if code == ldapSuccess {
			body.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 10, name, "responseName"))
		}
		if value != nil {
			body.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 11, *value, "responseValue"))
		}
		p.AppendChild(body)
		return p
	}
	switch name {
	case oidStartTLS:
		if lc.tls || lc.h.tls == nil {
			lc.write(resp(ldapOperationsError, "TLS already started", nil))
			return true
		}
		if !lc.write(resp(ldapSuccess, "", nil)) {
			return false
		}
		// the client sends nothing until it has our answer, so nothing is buffered
		tc := tls.Server(lc.conn, lc.lab.tlsConfig())
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			return false
		}
		tc.SetDeadline(time.Time{})
		// the raw connection stays tracked: closing it ends the TLS layer too
		lc.conn, lc.r, lc.tls = tc, bufio.NewReader(tc), true
		return true
	case oidWhoAmI:
		v := ""
		if lc.bound != "" {
			v = "dn:" + lc.lab.plan.dir.byNDN[lc.bound].dn
		}
		return lc.write(resp(ldapSuccess, "", &v))
	}
	return lc.write(resp(ldapProtocolError, "unsupported extended operation "+name, nil))
}

func (lc *ldapConn) rootDSE() *dirEntry {
	d := lc.lab.plan.dir
	return &dirEntry{dn: "", attrs: []dirAttr{
		{"objectClass", []string{"top"}},
		{"namingContexts", []string{d.baseDN}},
		{"defaultNamingContext", []string{d.baseDN}},
		{"supportedLDAPVersion", []string{"3"}},
		{"supportedExtension", []string{oidStartTLS, oidWhoAmI}},
		{"supportedControl", []string{oidPaging}},
		{"supportedSASLMechanisms", []string{"EXTERNAL"}},
		{"vendorName", []string{"389 Project"}},
		{"vendorVersion", []string{"389-Directory/2.4.5 B2024.017.0000"}},
		{"dnsHostName", []string{lc.h.fqdn}},
	}}
}

func (lc *ldapConn) search(id int64, op *ber.Packet, controls *ber.Packet) {
	done := func(code int, matched, diag string, ctrl *ber.Packet) {
		p := ldapResult(id, ldapSearchResultDone, code, matched, diag)
		if ctrl != nil {
			p.AppendChild(ctrl)
		}
		lc.write(p)
	}
	if len(op.Children) < 8 {
		done(ldapProtocolError, "", "malformed search request", nil)
		return
	}
	base := normDN(octets(op.Children[0]))
	scope, _ := op.Children[1].Value.(int64)
	sizeLimit, _ := op.Children[3].Value.(int64)
	typesOnly, _ := op.Children[5].Value.(bool)
	filter := op.Children[6]
	var attrs []string
	for _, a := range op.Children[7].Children {
		attrs = append(attrs, octets(a))
	}
	d := lc.lab.plan.dir
	var candidates []*dirEntry
	switch {
	case base == "" && scope == 0:
		candidates = []*dirEntry{lc.rootDSE()}
	case lc.bound == "":
		done(ldapInappropriateAuth, "", "Anonymous access is not allowed.", nil)
		return
	case d.byNDN[base] == nil:
		matched := ""
		for p := parentDN(base); p != ""; p = parentDN(p) {
			if e := d.byNDN[p]; e != nil {
				matched = e.dn
				break
			}
		}
		done(ldapNoSuchObject, matched, "", nil)
		return
	default:
		for _, e := range d.entries {
			switch scope {
			case 0:
				if e.ndn == base {
					candidates = append(candidates, e)
				}
			case 1:
				if parentDN(e.ndn) == base {
					candidates = append(candidates, e)
				}
			default:
				if e.ndn == base || strings.HasSuffix(e.ndn, ","+base) {
					candidates = append(candidates, e)
				}
			}
		}
	}
	var matches []*dirEntry
	for _, e := range candidates {
		if matchFilter(e, filter) {
			matches = append(matches, e)
		}
	}
	// paged results (RFC 2696): the cookie is the offset of the next page
	var pageCtrl *ber.Packet
	if size, cookie, ok := pagingRequest(controls); ok {
		start, _ := strconv.Atoi(cookie)
		start = min(max(start, 0), len(matches))
		end := len(matches)
		if size > 0 {
			end = min(start+size, len(matches))
		}
		next := ""
		if end < len(matches) {
			next = strconv.Itoa(end)
		}
		matches = matches[start:end]
		pageCtrl = pagingResponse(next)
	}
	for i, e := range matches {
		if sizeLimit > 0 && i >= int(sizeLimit) {
			done(ldapSizeLimitExceeded, "", "", pageCtrl)
			return
		}
		if !lc.write(entryPacket(id, e, attrs, typesOnly)) {
			return
		}
	}
	done(ldapSuccess, "", "", pageCtrl)
}

var operationalAttrs = map[string]bool{"entrydn": true}

func entryPacket(id int64, e *dirEntry, want []string, typesOnly bool) *ber.Packet {
	p := envelope(id)
	body := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldapSearchResultEntry, nil, "")
	body.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, e.dn, "objectName"))
	list := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attributes")
	all := len(want) == 0
	ops := false
	wanted := map[string]bool{}
	for _, w := range want {
		switch w {
		case "*":
			all = true
		case "+":
			ops = true
		case "1.1":
		default:
			wanted[strings.ToLower(w)] = true
		}
	}
	emit := func(name string, vals []string) {
		a := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attribute")
		a.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, name, "type"))
		set := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSet, nil, "vals")
		if !typesOnly {
			for _, v := range vals {
				set.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, v, "value"))
			}
		}
		a.AppendChild(set)
		list.AppendChild(a)
	}
	for _, at := range e.attrs {
		ln := strings.ToLower(at.name)
		if ln == "userpassword" || len(at.vals) == 0 {
			continue
		}
		if all || wanted[ln] {
			emit(at.name, at.vals)
		}
	}
	if e.dn != "" && (ops || wanted["entrydn"]) {
		emit("entryDN", []string{e.dn})
	}
	body.AppendChild(list)
	p.AppendChild(body)
	return p
}

func pagingRequest(controls *ber.Packet) (size int, cookie string, ok bool) {
	if controls == nil {
		return 0, "", false
	}
	for _, c := range controls.Children {
		if len(c.Children) == 0 || octets(c.Children[0]) != oidPaging {
			continue
		}
		val := c.Children[len(c.Children)-1]
		inner, err := ber.DecodePacketErr([]byte(octets(val)))
		if err != nil || len(inner.Children) < 2 {
			return 0, "", false
		}
		s, _ := inner.Children[0].Value.(int64)
		return int(s), octets(inner.Children[1]), true
	}
	return 0, "", false
}

func pagingResponse(cookie string) *ber.Packet {
	ctrls := ber.Encode(ber.ClassContext, ber.TypeConstructed, 0, nil, "Controls")
	c := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "Control")
	c.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, oidPaging, "type"))
	v := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "paging")
	v.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(0), "size"))
	cookieP := ber.Encode(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, nil, "cookie")
	cookieP.Value = cookie
	cookieP.Data.WriteString(cookie)
	v.AppendChild(cookieP)
	val := ber.Encode(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, nil, "value")
	val.Data.Write(v.Bytes())
	c.AppendChild(val)
	ctrls.AppendChild(c)
	return ctrls
}

// matchFilter evaluates an RFC 4511 filter; case-insensitive matching
// (caseIgnoreMatch), DN-valued attributes compared normalised.
func matchFilter(e *dirEntry, f *ber.Packet) bool {
	if f.ClassType != ber.ClassContext {
		return false
	}
	switch f.Tag {
	case 0: // and
		for _, c := range f.Children {
			if !matchFilter(e, c) {
				return false
			}
		}
		return true
	case 1: // or
		for _, c := range f.Children {
			if matchFilter(e, c) {
				return true
			}
		}
		return false
	case 2: // not
		return len(f.Children) == 1 && !matchFilter(e, f.Children[0])
	case 3, 5, 6, 8: // equality, >=, <=, approx
		if len(f.Children) != 2 {
			return false
		}
		attr, want := octets(f.Children[0]), octets(f.Children[1])
		for _, v := range attrValues(e, attr) {
			c := compareValues(attr, v, want)
			switch {
			case (f.Tag == 3 || f.Tag == 8) && c == 0,
				f.Tag == 5 && c >= 0,
				f.Tag == 6 && c <= 0:
				return true
			}
		}
		return false
	case 4: // substrings
		if len(f.Children) != 2 {
			return false
		}
		attr := octets(f.Children[0])
		for _, v := range attrValues(e, attr) {
			if matchSubstrings(strings.ToLower(v), f.Children[1].Children) {
				return true
			}
		}
		return false
	case 7: // present
		return len(attrValues(e, f.Data.String())) > 0
	}
	return false // extensible match and unknown filters match nothing
}

func attrValues(e *dirEntry, attr string) []string {
	if strings.EqualFold(attr, "entryDN") {
		return []string{e.dn}
	}
	return e.get(attr)
}

func compareValues(attr, a, b string) int {
	switch strings.ToLower(attr) {
	case "member", "memberof", "entrydn", "uniquemember":
		a, b = normDN(a), normDN(b)
	case "uidnumber", "gidnumber", "employeenumber":
		x, err1 := strconv.Atoi(a)
		y, err2 := strconv.Atoi(b)
		if err1 == nil && err2 == nil {
			return x - y
		}
	}
	return strings.Compare(strings.ToLower(a), strings.ToLower(b))
}

func matchSubstrings(v string, parts []*ber.Packet) bool {
	pos := 0
	for i, p := range parts {
		s := strings.ToLower(p.Data.String())
		switch p.Tag {
		case 0: // initial
			if !strings.HasPrefix(v, s) {
				return false
			}
			pos = len(s)
		case 1: // any
			k := strings.Index(v[pos:], s)
			if k < 0 {
				return false
			}
			pos += k + len(s)
		case 2: // final
			if !strings.HasSuffix(v[pos:], s) || (i == 0 && !strings.HasSuffix(v, s)) {
				return false
			}
		}
	}
	return true
}
