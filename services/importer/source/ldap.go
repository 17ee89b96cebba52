package source

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/ldapsearch"
)

// ou is one OU definition of an LDAP source.
type ou struct {
	base, filter, scope string
	attrs               []string
}

// ldapOUs reads the OU definitions: base/filter/attributes/scope for one, or ou.N.* for
// several, read in N order.
func ldapOUs(p map[string]string) ([]ou, error) {
	byN := map[int]*ou{}
	for k, v := range p {
		parts := strings.Split(k, ".")
		if len(parts) != 3 || parts[0] != "ou" {
			continue
		}
		n, err := strconv.Atoi(parts[1])
		if err != nil || n < 1 {
			return nil, fmt.Errorf("param %s: OUs are numbered 1, 2, …", k)
		}
		o := byN[n]
		if o == nil {
			o = &ou{}
			byN[n] = o
		}
		switch parts[2] {
		case "base":
			o.base = v
		case "filter":
			o.filter = v
		case "scope":
			o.scope = v
		case "attributes":
			o.attrs = splitList(v)
		}
	}
	var out []ou
	if p["base"] != "" || p["filter"] != "" || p["attributes"] != "" {
		if len(byN) > 0 {
			return nil, fmt.Errorf("params base/filter/attributes and ou.N.*: give one OU inline or numbered OUs, not both")
		}
		out = append(out, ou{base: p["base"], filter: p["filter"], scope: p["scope"], attrs: splitList(p["attributes"])})
	}
	ns := make([]int, 0, len(byN))
	for n := range byN {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	for _, n := range ns {
		if byN[n].base == "" {
			return nil, fmt.Errorf("param ou.%d.base: required (the OU's base DN)", n)
		}
		out = append(out, *byN[n])
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("params base (one OU) or ou.1.base, ou.2.base, …: at least one OU is required")
	}
	for i, o := range out {
		switch strings.ToLower(o.scope) {
		case "", "base", "one", "sub":
		default:
			return nil, fmt.Errorf("OU %d scope %q: want base, one or sub", i+1, o.scope)
		}
	}
	return out, nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// ldapSource reads each OU with one ldap_search probe whose entries stream a page at a
// time (paging cookies belong to one connection, so a page cannot be asked alone). Its
// cursor is ou=<i>;n=<entries of that OU already read>: after a restart, or when a sibling
// bridge runs the search again, the entries before n are passed over, so an entry is
// staged once (the order of one search over an unchanged directory is stable).
type ldapSource struct {
	p       Prober
	target  string
	params  ldapsearch.Params
	ous     []ou
	explode string

	cur *ldapStream
}

type ldapStream struct {
	ou     int
	read   int // entries handed out so far (the cursor's n)
	pages  chan ldapBatch
	cancel context.CancelFunc
}

type ldapBatch struct {
	entries []ldapsearch.Entry
	end     bool
	err     error
}

func newLDAP(def api.Source, p Prober) (*ldapSource, error) {
	ous, err := ldapOUs(def.Params)
	if err != nil {
		return nil, err
	}
	size := intParam(def.Params, "page_size", 500)
	s := &ldapSource{p: p, target: def.Params["target"], ous: ous, explode: def.Params["explode"]}
	s.params = ldapsearch.Params{Port: intParam(def.Params, "port", 0), Security: def.Params["security"],
		TLSVerify: def.Params["tls_verify"] == "true", PageSize: &size, MaxEntries: 1_000_000,
		Timeout: durationParam(def.Params, "timeout", 600e9)}
	return s, nil
}

func (s *ldapSource) Kind() string { return ldapsearch.Kind }

func (s *ldapSource) Close() error {
	if s.cur != nil {
		s.cur.cancel()
		s.cur = nil
	}
	return nil
}

func parseLDAPCursor(c string) (ouIdx, n int, err error) {
	if c == "" {
		return 0, 0, nil
	}
	if _, err := fmt.Sscanf(c, "ou=%d;n=%d", &ouIdx, &n); err != nil || ouIdx < 0 || n < 0 {
		return 0, 0, fmt.Errorf("ldap cursor %q: want ou=<i>;n=<entries>", c)
	}
	return ouIdx, n, nil
}

// start runs OU i's search, passing over its first skip entries.
func (s *ldapSource) start(ctx context.Context, i, skip int) {
	sctx, cancel := context.WithCancel(ctx)
	st := &ldapStream{ou: i, read: skip, pages: make(chan ldapBatch, 2), cancel: cancel}
	s.cur = st
	o := s.ous[i]
	params := s.params
	base := o.base
	params.BaseDN = &base
	params.Filter, params.Scope = o.filter, strings.ToLower(o.scope)
	if len(o.attrs) > 0 {
		params.Attributes = probes.List(o.attrs)
	}
	go func() {
		// next is the index (in this OU's result) of the next entry to hand out; each
		// execution counts its own entries from 0.
		next := skip
		seen := map[string]int{}
		final, err := s.p.Probe(sctx, ldapsearch.Kind, s.target, params, func(c Chunk) error {
			var pg ldapsearch.Page
			if err := json.Unmarshal(c.Result.Data, &pg); err != nil {
				return fmt.Errorf("ldap_search page: %w", err)
			}
			var fresh []ldapsearch.Entry
			for _, e := range pg.Entries {
				idx := seen[c.Exec]
				seen[c.Exec] = idx + 1
				if idx == next {
					fresh = append(fresh, e)
					next++
				}
			}
			if len(fresh) == 0 {
				return nil
			}
			select {
			case st.pages <- ldapBatch{entries: fresh}:
				return nil
			case <-sctx.Done():
				return sctx.Err()
			}
		})
		if err == nil {
			err = FinalError(final)
		}
		if err == nil {
			var res ldapsearch.Result
			if jerr := json.Unmarshal(final.Data, &res); jerr != nil {
				err = fmt.Errorf("ldap_search result: %w", jerr)
			} else if res.Truncated {
				err = fmt.Errorf("ldap_search of %s stopped at %d entries (max_entries): the bridge's limit; narrow the OU's filter or split it into OUs", o.base, res.Entries)
			} else if res.Entries != next {
				err = fmt.Errorf("ldap_search of %s: %d entries announced, %d read (sent again)", o.base, res.Entries, next)
			}
		}
		select {
		case st.pages <- ldapBatch{end: true, err: err}:
		case <-sctx.Done():
		}
	}()
}

// Page hands out the next page of entries as rows; at an OU's end it moves to the next.
func (s *ldapSource) Page(ctx context.Context, cursor string, _ int) (Page, error) {
	i, n, err := parseLDAPCursor(cursor)
	if err != nil {
		return Page{}, err
	}
	if i >= len(s.ous) {
		return Page{Done: true, Next: cursor}, nil
	}
	if s.cur == nil || s.cur.ou != i || s.cur.read != n {
		_ = s.Close()
		s.start(ctx, i, n)
	}
	st := s.cur
	select {
	case <-ctx.Done():
		return Page{}, ctx.Err()
	case b := <-st.pages:
		if b.end {
			_ = s.Close()
			if b.err != nil {
				return Page{}, b.err
			}
			next := fmt.Sprintf("ou=%d;n=0", i+1)
			return Page{Next: next, Done: i+1 >= len(s.ous)}, nil
		}
		out := Page{}
		for _, e := range b.entries {
			out.Rows = append(out.Rows, s.rows(e)...)
		}
		st.read += len(b.entries)
		out.Next = fmt.Sprintf("ou=%d;n=%d", i, st.read)
		return out, nil
	}
}

// rows is an entry as rows: dn and its attributes (a single value as text, several as a
// list), or one row per value of the exploded attribute.
func (s *ldapSource) rows(e ldapsearch.Entry) []Row {
	cols := map[string]any{"dn": e.DN}
	var explodeKey string
	for k, v := range e.Attributes {
		if s.explode != "" && strings.EqualFold(k, s.explode) {
			explodeKey = k
		}
		if len(v) == 1 {
			cols[k] = v[0]
		} else {
			l := make([]any, len(v))
			for i, x := range v {
				l[i] = x
			}
			cols[k] = l
		}
	}
	pos := api.Position{Record: e.DN}
	if explodeKey == "" || len(e.Attributes[explodeKey]) <= 1 {
		return []Row{{Pos: pos, Cols: cols}}
	}
	vals := e.Attributes[explodeKey]
	out := make([]Row, 0, len(vals))
	for _, v := range vals {
		c := make(map[string]any, len(cols))
		for k, x := range cols {
			c[k] = x
		}
		c[explodeKey] = v
		p := pos
		p.Record = e.DN + "#" + explodeKey + "=" + v
		out = append(out, Row{Pos: p, Cols: c})
	}
	return out
}
