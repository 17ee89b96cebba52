package bridge

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
)

// allowList is the effective allow-list: the site's ranges as the hub knows them, narrowed by
// the bridge's own --allow when given. A compromised or mistaken hub must not turn a bridge
// into a scanner of anything else, so the local list can only shrink what the hub says.
type allowList struct {
	site  atomic.Pointer[[]netip.Prefix]
	local []netip.Prefix
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
	empty := []netip.Prefix{}
	a.site.Store(&empty)
	return a, nil
}

func (a *allowList) setSite(ranges []string) {
	var ps []netip.Prefix
	for _, s := range ranges {
		if p, err := netip.ParsePrefix(s); err == nil {
			ps = append(ps, p.Masked())
		}
	}
	a.site.Store(&ps)
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
	inSite := false
	for _, p := range *a.site.Load() {
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
// the bridge has its own --allow, inside one of those too. Ranges are prefixes, hence
// contiguous: both ends inside means everything between is.
func (a *allowList) spanAllowed(first, last netip.Addr) bool {
	covered := func(list []netip.Prefix) bool {
		for _, r := range list {
			if r.Contains(first) && r.Contains(last) {
				return true
			}
		}
		return false
	}
	return covered(*a.site.Load()) && (len(a.local) == 0 || covered(a.local))
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
				return fmt.Errorf("target %s is outside this bridge's allowed ranges", t)
			}
			continue
		}
		if lo, hi, ok := strings.Cut(t, "-"); ok {
			l, err1 := netip.ParseAddr(lo)
			h, err2 := netip.ParseAddr(hi)
			if err1 == nil && err2 == nil {
				if !a.spanAllowed(l.Unmap(), h.Unmap()) {
					return fmt.Errorf("target range %s is outside this bridge's allowed ranges", t)
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
				return fmt.Errorf("target %s is outside this bridge's allowed ranges", host)
			}
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return fmt.Errorf("target %s does not resolve: %v", host, err)
		}
		for _, ip := range ips {
			if !a.allowedAddr(ip.Unmap()) {
				return fmt.Errorf("target %s resolves to %s, outside this bridge's allowed ranges", host, ip)
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
				return nil, fmt.Errorf("dial %s: %s is outside this bridge's allowed ranges", address, ip)
			}
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("dial %s: no address", address)
		}
		return d.DialContext(ctx, network, net.JoinHostPort(addrs[0].String(), port))
	}
}
