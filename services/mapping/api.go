package mapping

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	api "github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/page"
)

// endpoints serve the ops of the contract (libs/api/mapping), with its types.
func (s *service) endpoints() map[string]bus.Endpoint {
	return map[string]bus.Endpoint{
		api.Add.Name:   api.Add.Handle(s.add),
		api.List.Name:  api.List.Handle(s.list),
		api.Show.Name:  api.Show.Handle(s.show),
		api.MapOp.Name: api.MapOp.Handle(s.mapOp),
		api.Remap.Name: api.Remap.Handle(s.remap),
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)

// parseEntry reads https://host:443/path, http://host/, host:port; the scheme gives the
// default port.
func parseEntry(entry string) (host string, port int, err error) {
	if strings.Contains(entry, "://") {
		u, err := url.Parse(entry)
		if err != nil || u.Hostname() == "" {
			return "", 0, fmt.Errorf("entry %q: not a URL (want https://host:443/path or host:port)", entry)
		}
		host = u.Hostname()
		switch ps := u.Port(); {
		case ps != "":
			port, err = strconv.Atoi(ps)
		case u.Scheme == "https":
			port = 443
		case u.Scheme == "http":
			port = 80
		default:
			return "", 0, fmt.Errorf("entry %q: scheme %s has no default port; give one (host:port)", entry, u.Scheme)
		}
		if err != nil || port < 1 || port > 65535 {
			return "", 0, fmt.Errorf("entry %q: bad port", entry)
		}
		return host, port, nil
	}
	h, ps, err := net.SplitHostPort(entry)
	if err != nil {
		return "", 0, fmt.Errorf("entry %q: want https://host:443/path or host:port", entry)
	}
	port, err = strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("entry %q: port %q is not a TCP port", entry, ps)
	}
	return h, port, nil
}

func (s *service) add(ctx context.Context, r api.AddRequest) (api.AppService, error) {
	var problems []string
	if !nameRE.MatchString(r.Name) {
		problems = append(problems, fmt.Sprintf("name %q: want letters, digits, - _ . (up to 100)", r.Name))
	}
	host, port, err := parseEntry(r.Entry)
	if err != nil {
		problems = append(problems, err.Error())
	}
	depth := r.Depth
	if depth == 0 {
		depth = s.cfg.Depth
	}
	if depth < 1 || depth > 20 {
		problems = append(problems, fmt.Sprintf("depth %d: want 1 to 20", r.Depth))
	}
	every := s.cfg.Every
	if r.Every != "" {
		if every, err = time.ParseDuration(r.Every); err != nil || every < 0 || (every > 0 && every < time.Minute) {
			problems = append(problems, fmt.Sprintf("every %q: want 0 (never) or a duration of at least 1m", r.Every))
		}
	}
	if len(problems) > 0 {
		return api.AppService{}, bus.Fail(errs.BadRequest, "%s", strings.Join(problems, "; "))
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		// A name: the CMDB knows hosts by name and FQDN (discovery put them there).
		if addr, err = s.lookupName(ctx, host); err != nil {
			return api.AppService{}, err
		}
	}
	sites, err := s.sites(ctx)
	if err != nil {
		return api.AppService{}, err
	}
	site := r.Site
	if site == "" {
		for _, st := range sites {
			if siteHolds(st, addr) {
				site = st.Name
				break
			}
		}
		if site == "" {
			return api.AppService{}, bus.Fail(errs.BadRequest, "entry %s is in no site's ranges (`outpost site ls`); add the range to a site or give --site", addr)
		}
	} else {
		i := slices.IndexFunc(sites, func(st agentsapi.Site) bool { return st.Name == site })
		if i < 0 {
			return api.AppService{}, bus.Fail(errs.NotFound, "site %q does not exist (`outpost site ls`)", site)
		}
		if !siteHolds(sites[i], addr) {
			return api.AppService{}, bus.Fail(errs.BadRequest, "entry %s is outside site %s's ranges %v: its bridges may not probe it", addr, site, sites[i].Ranges)
		}
	}
	a := api.AppService{Name: r.Name, Entry: r.Entry, Site: site, Host: addr.String(), Port: port, Depth: depth,
		Every: every.String(), State: api.ServiceNew, Created: s.now()}
	if every > 0 {
		a.NextMap = a.Created.Add(every)
	}
	b, _ := json.Marshal(a)
	if _, err := s.kvSvc.Create(ctx, r.Name, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			old, gerr := s.get(ctx, r.Name)
			if gerr == nil && old.Entry == a.Entry && old.Site == a.Site && old.Depth == a.Depth && old.Every == a.Every {
				return old, nil // the same declaration twice: idempotent
			}
			return api.AppService{}, bus.Fail(errs.Conflict, "service %q exists with another entry/site/depth/schedule (`outpost services show %s`)", r.Name, r.Name)
		}
		return api.AppService{}, err
	}
	return a, nil
}

func siteHolds(st agentsapi.Site, a netip.Addr) bool {
	in := false
	for _, r := range st.Ranges {
		if p, err := netip.ParsePrefix(r); err == nil && p.Contains(a) {
			in = true
		} else if ip, err := netip.ParseAddr(r); err == nil && ip == a {
			in = true
		}
	}
	for _, r := range st.Exclude {
		if p, err := netip.ParsePrefix(r); err == nil && p.Contains(a) {
			return false
		}
	}
	return in
}

func (s *service) list(ctx context.Context, r page.Request) (api.ListReply, error) {
	size, err := r.Size()
	if err != nil {
		return api.ListReply{}, bus.Fail(errs.BadRequest, "%v", err)
	}
	all, err := s.all(ctx)
	if err != nil {
		return api.ListReply{}, err
	}
	out := api.ListReply{Services: []api.AppService{}}
	for _, a := range all {
		if r.Cursor != "" && a.Name <= r.Cursor {
			continue
		}
		if len(out.Services) == size {
			out.NextCursor = out.Services[size-1].Name
			break
		}
		out.Services = append(out.Services, a)
	}
	return out, nil
}

func (s *service) show(ctx context.Context, r api.NameRequest) (api.Detail, error) {
	a, err := s.get(ctx, r.Name)
	if err != nil {
		return api.Detail{}, err
	}
	m, err := s.latestMap(ctx, r.Name)
	if err != nil {
		return api.Detail{}, err
	}
	return api.Detail{Service: a, Map: m}, nil
}

// mapOp answers the current map; with Wait it maps first when there is none yet (or waits
// for a mapping in progress); without, it starts one in the background.
func (s *service) mapOp(ctx context.Context, r api.MapRequest) (api.Detail, error) {
	d, err := s.show(ctx, api.NameRequest{Name: r.Name})
	if err != nil || d.Map != nil {
		return d, err
	}
	done := s.startMapping(r.Name, reasonFirstMap)
	if !r.Wait {
		d.Service.State = api.ServiceMapping
		return d, nil
	}
	select {
	case <-done:
	case <-ctx.Done():
		return api.Detail{}, ctx.Err()
	}
	return s.show(ctx, api.NameRequest{Name: r.Name})
}

func (s *service) showFor(ctx context.Context, name string) (api.Detail, error) {
	return s.show(ctx, api.NameRequest{Name: name})
}

func (s *service) remap(ctx context.Context, r api.NameRequest) (api.Detail, error) {
	if _, err := s.get(ctx, r.Name); err != nil {
		return api.Detail{}, err
	}
	// A mapping in progress is waited for, then a new one runs: remap always maps anew.
	if done := s.inProgress(r.Name); done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return api.Detail{}, ctx.Err()
		}
	}
	select {
	case <-s.startMapping(r.Name, reasonByHand):
	case <-ctx.Done():
		return api.Detail{}, ctx.Err()
	}
	return s.showFor(ctx, r.Name)
}

func (s *service) get(ctx context.Context, name string) (api.AppService, error) {
	if !nameRE.MatchString(name) {
		return api.AppService{}, bus.Fail(errs.NotFound, "service %q does not exist (`outpost services ls`)", name)
	}
	e, err := s.kvSvc.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return api.AppService{}, bus.Fail(errs.NotFound, "service %q does not exist (`outpost services ls`)", name)
	}
	if err != nil {
		return api.AppService{}, err
	}
	var a api.AppService
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return api.AppService{}, fmt.Errorf("service %s: %w", name, err)
	}
	return a, nil
}

func (s *service) put(ctx context.Context, a api.AppService) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = s.kvSvc.Put(ctx, a.Name, b)
	return err
}

func (s *service) all(ctx context.Context) ([]api.AppService, error) {
	lister, err := s.kvSvc.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for k := range lister.Keys() {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([]api.AppService, 0, len(names))
	for _, n := range names {
		a, err := s.get(ctx, n)
		if err != nil {
			var se *bus.ServiceError
			if errors.As(err, &se) && se.Code == http.StatusNotFound {
				continue // removed meanwhile
			}
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func (s *service) latestMap(ctx context.Context, name string) (*api.Map, error) {
	e, err := s.kvMaps.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m api.Map
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return nil, fmt.Errorf("map of %s: %w", name, err)
	}
	return &m, nil
}
