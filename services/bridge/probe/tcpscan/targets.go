package tcpscan

import (
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Presets of ports.
var (
	// top100 is nmap's list of the 100 most common TCP ports (nmap -F).
	top100 = []uint16{7, 9, 13, 21, 22, 23, 25, 26, 37, 53, 79, 80, 81, 88, 106, 110, 111, 113, 119, 135, 139, 143,
		144, 179, 199, 389, 427, 443, 444, 445, 465, 513, 514, 515, 543, 544, 548, 554, 587, 631, 646, 873, 990, 993,
		995, 1025, 1026, 1027, 1028, 1029, 1110, 1433, 1720, 1723, 1755, 1900, 2000, 2001, 2049, 2121, 2717, 3000,
		3128, 3306, 3389, 3986, 4899, 5000, 5009, 5051, 5060, 5101, 5190, 5357, 5432, 5631, 5666, 5800, 5900, 6000,
		6001, 6646, 7070, 8000, 8008, 8009, 8080, 8081, 8443, 8888, 9100, 9999, 10000, 32768, 49152, 49153, 49154,
		49155, 49156, 49157}
	// discovery are the ports discovery classifies hosts by: remote shells, web and TLS,
	// directories, databases, Windows, printers.
	discovery = []uint16{21, 22, 23, 25, 53, 80, 88, 110, 111, 135, 139, 143, 389, 443, 445, 465, 587, 636, 993,
		995, 1433, 1521, 2049, 3268, 3306, 3389, 5432, 5900, 5985, 5986, 6379, 8080, 8443, 9100, 9200, 27017}
)

// Presets maps a preset name to its ports.
var Presets = map[string][]uint16{"top100": top100, "discovery": discovery}

// ParsePorts reads port specs: numbers, ranges "1000-2000", "-" for all, and presets.
// The result is sorted and without duplicates.
func ParsePorts(specs []string) ([]uint16, error) {
	var out []uint16
	for _, s := range specs {
		s = strings.TrimSpace(s)
		if p, ok := Presets[strings.ToLower(s)]; ok {
			out = append(out, p...)
			continue
		}
		if s == "-" || strings.EqualFold(s, "all") {
			s = "1-65535"
		}
		lo, hi, isRange := strings.Cut(s, "-")
		a, err := port(lo)
		if err != nil {
			return nil, fmt.Errorf("%q is not a port, a range or a preset (top100, discovery)", s)
		}
		b := a
		if isRange {
			if b, err = port(hi); err != nil || b < a {
				return nil, fmt.Errorf("%q is not a port range (want e.g. 1000-2000)", s)
			}
		}
		for p := int(a); p <= int(b); p++ {
			out = append(out, uint16(p))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func port(s string) (uint16, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("not a port")
	}
	return uint16(n), nil
}

// ParseTargets reads addresses, CIDRs and ranges ("10.0.0.1-10.0.0.50", "10.0.0.1-50")
// into a sorted list without duplicates, refusing more than limit addresses.
func ParseTargets(specs []string, limit int) ([]netip.Addr, error) {
	var out []netip.Addr
	add := func(n int) error {
		if len(out)+n > limit {
			return fmt.Errorf("more than %d addresses", limit)
		}
		return nil
	}
	for _, s := range specs {
		s = strings.TrimSpace(s)
		switch {
		case strings.Contains(s, "/"):
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR", s)
			}
			p = p.Masked()
			bits := p.Addr().BitLen() - p.Bits()
			if bits > 30 {
				return nil, fmt.Errorf("%q: more than %d addresses", s, limit)
			}
			if err := add(1 << bits); err != nil {
				return nil, fmt.Errorf("%q: %w", s, err)
			}
			for a, i := p.Addr(), 0; i < 1<<bits; a, i = a.Next(), i+1 {
				out = append(out, a.Unmap())
			}
		case strings.Contains(s, "-"):
			lo, hi, _ := strings.Cut(s, "-")
			a, err := netip.ParseAddr(strings.TrimSpace(lo))
			if err != nil {
				return nil, fmt.Errorf("%q is not an address range", s)
			}
			a = a.Unmap()
			b, err := rangeEnd(a, strings.TrimSpace(hi))
			if err != nil || b.Less(a) {
				return nil, fmt.Errorf("%q is not an address range (want 10.0.0.1-10.0.0.50 or 10.0.0.1-50)", s)
			}
			n := new(big.Int).Sub(new(big.Int).SetBytes(b.AsSlice()), new(big.Int).SetBytes(a.AsSlice()))
			if !n.IsInt64() || n.Int64() >= int64(limit) {
				return nil, fmt.Errorf("%q: more than %d addresses", s, limit)
			}
			if err := add(int(n.Int64()) + 1); err != nil {
				return nil, fmt.Errorf("%q: %w", s, err)
			}
			for x := a; ; x = x.Next() {
				out = append(out, x)
				if x == b {
					break
				}
			}
		default:
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not an IP address, a CIDR or a range", s)
			}
			if err := add(1); err != nil {
				return nil, err
			}
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out), nil
}

// rangeEnd reads the end of a range: a full address, or the last octet of an IPv4 start.
func rangeEnd(start netip.Addr, s string) (netip.Addr, error) {
	if b, err := netip.ParseAddr(s); err == nil {
		b = b.Unmap()
		if b.Is4() != start.Is4() {
			return netip.Addr{}, fmt.Errorf("mixed families")
		}
		return b, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 || !start.Is4() {
		return netip.Addr{}, fmt.Errorf("bad end")
	}
	a := start.As4()
	a[3] = byte(n)
	return netip.AddrFrom4(a), nil
}

// compactPorts writes sorted ports as "1-21,23,25-79".
func compactPorts(ports []uint16) string {
	var b strings.Builder
	for i := 0; i < len(ports); {
		j := i
		for j+1 < len(ports) && ports[j+1] == ports[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(ports[i])))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(ports[j])))
		}
		i = j + 1
	}
	return b.String()
}

// compactAddrs writes sorted addresses as ranges: "10.0.0.1-10.0.0.9,10.0.0.20".
func compactAddrs(addrs []netip.Addr) []string {
	var out []string
	for i := 0; i < len(addrs); {
		j := i
		for j+1 < len(addrs) && addrs[j+1] == addrs[j].Next() {
			j++
		}
		if j > i {
			out = append(out, addrs[i].String()+"-"+addrs[j].String())
		} else {
			out = append(out, addrs[i].String())
		}
		i = j + 1
	}
	return out
}
