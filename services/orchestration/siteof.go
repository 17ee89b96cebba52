package orchestration

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/page"
)

// siteTTL is how long the list of sites and their ranges is reused for site_of: a
// for_each over 500 hosts asks once, and a site added is seen within it.
const siteTTL = 10 * time.Second

type siteRange struct {
	site    string
	include []netip.Prefix
	exclude []netip.Prefix
}

// siteOf is the site whose ranges hold addr: the one with the most specific range, a site
// excluding the address not counting. Ties are refused: which bridges run a step must not
// depend on the order of a list.
func (s *service) siteOf(ctx context.Context, addr string) (string, error) {
	ip, err := netip.ParseAddr(strings.TrimSpace(addr))
	if err != nil {
		return "", permanent("site_of %q: want an IP address", addr)
	}
	sites, err := s.sitesCached(ctx)
	if err != nil {
		return "", fmt.Errorf("site_of: list the sites: %w", err)
	}
	best, bits, tie := "", -1, ""
	for _, sr := range sites {
		excluded := false
		for _, p := range sr.exclude {
			if p.Contains(ip) {
				excluded = true
			}
		}
		if excluded {
			continue
		}
		for _, p := range sr.include {
			if !p.Contains(ip) {
				continue
			}
			switch {
			case p.Bits() > bits:
				best, bits, tie = sr.site, p.Bits(), ""
			case p.Bits() == bits && sr.site != best:
				tie = sr.site
			}
		}
	}
	switch {
	case best == "":
		return "", permanent("site_of %s: no site's ranges hold it (`outpost site ls`)", ip)
	case tie != "":
		return "", permanent("site_of %s: sites %s and %s both hold it in a /%d: name the site instead", ip, best, tie, bits)
	}
	return best, nil
}

func (s *service) sitesCached(ctx context.Context) ([]siteRange, error) {
	s.sitesMu.Lock()
	defer s.sitesMu.Unlock()
	if s.sites != nil && s.now().Before(s.sitesAt.Add(siteTTL)) {
		return s.sites, nil
	}
	var out []siteRange
	req := page.Request{Limit: 1000}
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rep, err := bus.WhenAvailable(cctx, 8*time.Second, func(ctx context.Context) (agentsapi.SiteListReply, error) {
			return agentsapi.SiteList.Call(ctx, s.deps.NC, req)
		})
		cancel()
		if err != nil {
			return nil, err
		}
		for _, site := range rep.Sites {
			sr := siteRange{site: site.Name}
			for _, r := range site.Ranges {
				if p, err := parseRange(r); err == nil {
					sr.include = append(sr.include, p)
				}
			}
			for _, r := range site.Exclude {
				if p, err := parseRange(r); err == nil {
					sr.exclude = append(sr.exclude, p)
				}
			}
			out = append(out, sr)
		}
		if rep.NextCursor == "" {
			break
		}
		req.Cursor = rep.NextCursor
	}
	s.sites, s.sitesAt = out, s.now()
	return out, nil
}

// parseRange reads a CIDR or a single address.
func parseRange(r string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(r); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(r)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
