package lab

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The filter expression of iproute2's ss (`ss -ltnp 'sport = :80 and ( src 10.0.0.5 or
// src 0.0.0.0 )'`), as far as tools that ask a host for one socket use it: sport/dport with
// a comparison, src/dst with an address, a prefix or a port, and, or, ! and parentheses
// ("and" binds tighter than "or", as in ss's grammar; two terms side by side mean "and").
// The lab's hosts answer these like a real ss does, so a filtered query returns the same
// lines as the whole table with the others removed.

// ssSock is what a filter looks at in one socket.
type ssSock struct {
	local, peer netip.AddrPort // peer invalid: a listener (peer *)
}

type ssFilter func(ssSock) bool

// parseSSFilter parses the words after ss's options; no words: every socket.
func parseSSFilter(words []string) (ssFilter, error) {
	var toks []string
	for _, w := range words {
		w = strings.NewReplacer("(", " ( ", ")", " ) ", "!", " ! ").Replace(w)
		// "!=" was split above: join it again
		w = strings.ReplaceAll(w, " ! =", " !=")
		toks = append(toks, strings.Fields(w)...)
	}
	if len(toks) == 0 {
		return func(ssSock) bool { return true }, nil
	}
	p := &ssParser{toks: toks}
	f, err := p.or()
	if err == nil && p.i < len(toks) {
		err = fmt.Errorf("unexpected %q", toks[p.i])
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

type ssParser struct {
	toks []string
	i    int
}

func (p *ssParser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return ""
}

func (p *ssParser) next() string {
	t := p.peek()
	p.i++
	return t
}

func (p *ssParser) or() (ssFilter, error) {
	l, err := p.and()
	for err == nil && (p.peek() == "or" || p.peek() == "|" || p.peek() == "||") {
		p.next()
		var r ssFilter
		if r, err = p.and(); err == nil {
			a, b := l, r
			l = func(s ssSock) bool { return a(s) || b(s) }
		}
	}
	return l, err
}

func (p *ssParser) and() (ssFilter, error) {
	l, err := p.unary()
	for err == nil {
		switch t := p.peek(); t {
		case "and", "&", "&&":
			p.next()
		case "", "or", "|", "||", ")":
			return l, nil
		}
		var r ssFilter
		if r, err = p.unary(); err == nil {
			a, b := l, r
			l = func(s ssSock) bool { return a(s) && b(s) }
		}
	}
	return l, err
}

func (p *ssParser) unary() (ssFilter, error) {
	switch t := p.next(); t {
	case "!", "not":
		f, err := p.unary()
		if err != nil {
			return nil, err
		}
		return func(s ssSock) bool { return !f(s) }, nil
	case "(":
		f, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.next() != ")" {
			return nil, fmt.Errorf("missing )")
		}
		return f, nil
	case "sport", "dport":
		op := "="
		if o := p.peek(); strings.IndexFunc(o, func(r rune) bool { return r != ':' && (r < '0' || r > '9') }) >= 0 {
			op = p.next()
		}
		port, err := ssPort(p.next())
		if err != nil {
			return nil, err
		}
		cmp, err := ssCompare(op)
		if err != nil {
			return nil, err
		}
		return func(s ssSock) bool {
			a := s.local
			if t == "dport" {
				if !s.peer.IsValid() {
					return false
				}
				a = s.peer
			}
			return cmp(int(a.Port()), port)
		}, nil
	case "src", "dst":
		if o := p.peek(); o == "=" || o == "==" || o == "eq" {
			p.next()
		}
		match, err := ssHost(p.next())
		if err != nil {
			return nil, err
		}
		return func(s ssSock) bool {
			a := s.local
			if t == "dst" {
				if !s.peer.IsValid() {
					return false
				}
				a = s.peer
			}
			return match(a)
		}, nil
	case "":
		return nil, fmt.Errorf("the expression ends too early")
	default:
		return nil, fmt.Errorf("unexpected %q", t)
	}
}

func ssCompare(op string) (func(a, b int) bool, error) {
	switch op {
	case "=", "==", "eq":
		return func(a, b int) bool { return a == b }, nil
	case "!=", "ne", "neq":
		return func(a, b int) bool { return a != b }, nil
	case ">", "gt":
		return func(a, b int) bool { return a > b }, nil
	case "<", "lt":
		return func(a, b int) bool { return a < b }, nil
	case ">=", "ge", "geq":
		return func(a, b int) bool { return a >= b }, nil
	case "<=", "le", "leq":
		return func(a, b int) bool { return a <= b }, nil
	}
	return nil, fmt.Errorf("unknown comparison %q", op)
}

// ssPort reads ":80" or "80".
func ssPort(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(s, ":"))
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return n, nil
}

// ssHost reads what src/dst take: 10.0.0.5, 10.0.0.0/24, [::], [::ffff:10.0.0.5],
// 10.0.0.5:80, :80, *:80. An address matches its own family only (0.0.0.0 is the IPv4
// wildcard socket, [::] the IPv6 one), as ss compares them.
func ssHost(s string) (func(netip.AddrPort) bool, error) {
	host, port := s, -1
	if i := strings.LastIndexByte(s, ':'); i >= 0 && (strings.HasPrefix(s, "[") && strings.HasSuffix(s[:i], "]") || !strings.HasPrefix(s, "[") && strings.Count(s, ":") == 1) {
		p, err := ssPort(s[i:])
		if err != nil {
			return nil, err
		}
		host, port = s[:i], p
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	var pfx netip.Prefix
	switch {
	case host == "" || host == "*":
	case strings.Contains(host, "/"):
		var err error
		if pfx, err = netip.ParsePrefix(host); err != nil {
			return nil, fmt.Errorf("bad address %q", s)
		}
	default:
		a, err := netip.ParseAddr(host)
		if err != nil {
			return nil, fmt.Errorf("bad address %q", s)
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	return func(a netip.AddrPort) bool {
		if port >= 0 && int(a.Port()) != port {
			return false
		}
		return !pfx.IsValid() || pfx.Contains(a.Addr())
	}, nil
}

// ssAddrPort reads a socket's address as the lab prints it: 0.0.0.0, [::], 127.0.0.53%lo.
func ssAddrPort(addr string, port int) netip.AddrPort {
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	if i := strings.IndexByte(addr, '%'); i >= 0 {
		addr = addr[:i]
	}
	a, _ := netip.ParseAddr(addr)
	return netip.AddrPortFrom(a, uint16(port))
}
