package bridge

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
)

// allowList is the effective allow-list: the site's ranges as the hub knows them, less the
// site's excludes, narrowed by the bridge's own --allow when given. A compromised or mistaken
// hub must not turn a bridge into a scanner of anything else, so the local list can only
// shrink what the hub says.
//
// Link-local and cloud metadata addresses (metadataRanges) are never allowed by a range that
// merely contains them (0.0.0.0/0, 169.0.0.0/8): a site range must name them — be equal to
// or inside one of them. A metadata service hands out cloud credentials to whoever asks
// from the host, and a probe must not be the one asking.
type allowList struct {
	site  atomic.Pointer[siteRanges]
	local []netip.Prefix
}

// siteRanges is what the hub says of the site; swapped whole so a check never sees ranges
// of one refresh with excludes of another.
type siteRanges struct {
	ranges  []netip.Prefix
	exclude []netip.Prefix
}

// metadataRanges are denied unless a site range names them (see allowList).
var metadataRanges = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),    // IPv4 link-local; 169.254.169.254 is AWS/GCP/Azure metadata
	netip.MustParsePrefix("fe80::/10"),         // IPv6 link-local
	netip.MustParsePrefix("fd00:ec2::254/128"), // AWS IMDS over IPv6
}

func newAllowList(local []string) (*allowList, error) {
	a := &allowList{}
	for _, s := range local {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		a.local = append(a.local, p.Masked())
	}
	a.site.Store(&siteRanges{})
	return a, nil
}

// setSite takes the site's ranges and excludes from the hub's enrollment reply. An exclude
// that does not parse is kept as its best reading, never dropped: dropping it would widen
// what the bridge probes.
func (a *allowList) setSite(ranges, exclude []string) {
	sr := &siteRanges{}
	for _, s := range ranges {
		if p, err := parsePrefixOrAddr(s); err == nil {
			sr.ranges = append(sr.ranges, p)
		}
	}
	for _, s := range exclude {
		if p, err := parsePrefixOrAddr(s); err == nil {
			sr.exclude = append(sr.exclude, p)
		} else {
			// An exclude we cannot read: refuse the whole site rather than probe what the
			// operator meant to keep out.
			sr.ranges = nil
			break
		}
	}
	a.site.Store(sr)
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	addr = addr.Unmap()
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

// namesMetadata reports whether a site range names the metadata range m: it is equal to
// or inside it (169.254.169.254/32 names 169.254.0.0/16; 0.0.0.0/0 does not).
func namesMetadata(r, m netip.Prefix) bool {
	return r.Addr().Is4() == m.Addr().Is4() && r.Bits() >= m.Bits() && m.Contains(r.Addr())
}

// metadataDenied reports whether addr is in a metadata range no site range names.
func (sr *siteRanges) metadataDenied(addr netip.Addr) bool {
	for _, m := range metadataRanges {
		if !m.Contains(addr) {
			continue
		}
		for _, r := range sr.ranges {
			if namesMetadata(r, m) && r.Contains(addr) {
				return false
			}
		}
		return true
	}
	return false
}

// excluded reports whether addr is in one of the site's excludes.
func (sr *siteRanges) excluded(addr netip.Addr) bool {
	for _, p := range sr.exclude {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// why explains a refusal of addr, for the denied result.
func (a *allowList) why(addr netip.Addr) string {
	sr := a.site.Load()
	switch {
	case sr.excluded(addr):
		return "is excluded from the site (site --exclude)"
	case sr.metadataDenied(addr):
		return "is a link-local or cloud metadata address, denied unless a site range names it"
	}
	return "is outside this bridge's allowed ranges"
}

// Allowed reports whether ip may be probed.
func (a *allowList) Allowed(ip net.IP) bool {
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	return a.allowedAddr(addr.Unmap())
}

func (a *allowList) allowedAddr(addr netip.Addr) bool {
	sr := a.site.Load()
	if sr.excluded(addr) || sr.metadataDenied(addr) {
		return false
	}
	inSite := false
	for _, p := range sr.ranges {
		if p.Contains(addr) {
			inSite = true
			break
		}
	}
	if !inSite {
		return false
	}
	if len(a.local) == 0 {
		return true
	}
	for _, p := range a.local {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// prefixAllowed: a prefix is allowed when it lies inside one allowed range.
func (a *allowList) prefixAllowed(p netip.Prefix) bool {
	return a.spanAllowed(p.Masked().Addr(), lastAddr(p))
}

// spanAllowed: the addresses first..last lie inside one range of the site's list and, when
// the bridge has its own --allow, inside one of those too; and none of them is excluded or
// a metadata address the site does not name. Ranges are prefixes, hence contiguous: both
// ends inside means everything between is.
func (a *allowList) spanAllowed(first, last netip.Addr) bool {
	sr := a.site.Load()
	overlaps := func(p netip.Prefix) bool {
		return p.Addr().BitLen() == first.BitLen() && p.Masked().Addr().Compare(last) <= 0 && first.Compare(lastAddr(p)) <= 0
	}
	for _, p := range sr.exclude {
		if overlaps(p) {
			return false
		}
	}
	for _, m := range metadataRanges {
		if !overlaps(m) {
			continue
		}
		named := false
		for _, r := range sr.ranges {
			if namesMetadata(r, m) && r.Contains(first) && r.Contains(last) {
				named = true
			}
		}
		if !named {
			return false
		}
	}
	covered := func(list []netip.Prefix) bool {
		for _, r := range list {
			if r.Contains(first) && r.Contains(last) {
				return true
			}
		}
		return false
	}
	return covered(sr.ranges) && (len(a.local) == 0 || covered(a.local))
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= p.Bits() {
				b[i] |= 1 << (7 - j)
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// checkTarget refuses a probe target outside the allow-list. Lists (comma) and ranges
// (a-b) are checked element by element; a host name must resolve only to allowed addresses.
func (a *allowList) checkTarget(ctx context.Context, target string) error {
	if target == "" {
		return nil
	}
	for _, t := range strings.Split(target, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if p, err := netip.ParsePrefix(t); err == nil {
			if !a.prefixAllowed(p) {
				return fmt.Errorf("target %s is outside this bridge's allowed ranges, or holds excluded or metadata addresses", t)
			}
			continue
		}
		if lo, hi, ok := strings.Cut(t, "-"); ok {
			l, err1 := netip.ParseAddr(lo)
			h, err2 := netip.ParseAddr(hi)
			if err1 == nil && err2 == nil {
				if !a.spanAllowed(l.Unmap(), h.Unmap()) {
					return fmt.Errorf("target range %s is outside this bridge's allowed ranges, or holds excluded or metadata addresses", t)
				}
				continue
			}
		}
		host := t
		if h, _, err := net.SplitHostPort(t); err == nil {
			host = h
		}
		if addr, err := netip.ParseAddr(host); err == nil {
			if !a.allowedAddr(addr.Unmap()) {
				return fmt.Errorf("target %s %s", host, a.why(addr.Unmap()))
			}
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return fmt.Errorf("target %s does not resolve: %v", host, err)
		}
		for _, ip := range ips {
			if !a.allowedAddr(ip.Unmap()) {
				return fmt.Errorf("target %s resolves to %s, which %s", host, ip, a.why(ip.Unmap()))
			}
		}
	}
	return nil
}

// dialer refuses connections outside the allow-list, whatever a probe kind asks.
func (a *allowList) dialer() func(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		for _, ip := range addrs {
			if !a.allowedAddr(ip.Unmap()) {
				return nil, fmt.Errorf("dial %s: %s %s", address, ip, a.why(ip.Unmap()))
			}
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("dial %s: no address", address)
		}
		return d.DialContext(ctx, network, net.JoinHostPort(addrs[0].String(), port))
	}
}
