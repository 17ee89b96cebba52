package cmdb

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// Operations of svc.cmdb.<op>. Requests are JSON, decoded strictly (an unknown field is a
// 400 naming it); errors are bus.ServiceError: 400 bad input (naming the field), 404 unknown
// CI, 503 store unavailable (retry).
const (
	OpList      = "ls"
	OpGet       = "get"
	OpHistory   = "history"
	OpRel       = "rel"
	OpGraph     = "graph"
	OpCounts    = "counts"
	OpConflicts = "conflicts"
	OpClasses   = "classes"
	OpIngest    = "ingest"
)

// Limits of the query API.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
	DefaultDepth    = 1
	MaxDepth        = 5
	DefaultMaxNodes = 200
	MaxMaxNodes     = 2000
)

// ListRequest (ls) selects CIs, ordered by id.
type ListRequest struct {
	// Class selects CIs of this class and its subclasses ("server" includes linux_server).
	Class string `json:"class,omitempty"`
	// Filters selects CIs whose attribute equals the value, compared trimmed and
	// case-insensitively on its text ({"os": "linux", "cpu_count": "4"}).
	Filters map[string]string `json:"filters,omitempty"`
	// Search is a case-insensitive prefix of a name, IP, serial number, MAC, FQDN, address
	// or fingerprint (a device's adapter MACs included).
	Search string `json:"search,omitempty"`
	Stale  *bool  `json:"stale,omitempty"`
	Cursor string `json:"cursor,omitempty"` // next_cursor of the previous page
	Limit  int    `json:"limit,omitempty"`  // default 50, at most 500
	// Total asks for the number of CIs of the class (subclasses included). It is answered
	// only for a request without filters, search or stale condition, and costs a count of
	// the whole table (~20 ms at 100,000 CIs), so ask on the first page only.
	Total bool `json:"total,omitempty"`
}

// ListResponse is one page of CIs; Total is set when the request asked for it and could
// be answered (see ListRequest.Total).
type ListResponse struct {
	Items      []store.CI `json:"items"`
	NextCursor string     `json:"next_cursor,omitempty"`
	Total      *int64     `json:"total,omitempty"`
}

// IDRequest names one CI (get, rel).
type IDRequest struct {
	ID string `json:"id"`
}

// GetResponse (get) is one CI: attributes with the source of each value, identifiers,
// relations in both directions with the CI at the other end, and its latest 100 history
// entries (history pages through the rest).
type GetResponse = store.Detail

// HistoryRequest (history) pages through a CI's changes, newest first.
type HistoryRequest struct {
	ID     string `json:"id"`
	Cursor string `json:"cursor,omitempty"`
	Limit  int    `json:"limit,omitempty"` // default 50, at most 500
}

// HistoryResponse is one page of history.
type HistoryResponse struct {
	Items      []store.HistoryEntry `json:"items"`
	NextCursor string               `json:"next_cursor,omitempty"`
}

// RelResponse (rel) is a CI's relations in both directions.
type RelResponse struct {
	CI       store.Ref        `json:"ci"`
	Outgoing []store.Relation `json:"outgoing"`
	Incoming []store.Relation `json:"incoming"`
}

// GraphRequest (graph) asks for the CIs within Depth relations of ID, in either direction.
type GraphRequest struct {
	ID       string `json:"id"`
	Depth    int    `json:"depth,omitempty"`     // default 1, at most 5
	MaxNodes int    `json:"max_nodes,omitempty"` // default 200, at most 2000
}

// GraphResponse is the neighbourhood: nodes with their depth, edges, and whether
// max_nodes cut it short.
type GraphResponse = store.Graph

// CountsResponse (counts) counts CIs per exact class, per class with its subclasses
// (rolled up to "ci"), and in all.
type CountsResponse struct {
	Exact          map[string]int64 `json:"exact"`
	WithSubclasses map[string]int64 `json:"with_subclasses"`
	Total          int64            `json:"total"`
}

// PageRequest (conflicts) pages through a list.
type PageRequest struct {
	Cursor string `json:"cursor,omitempty"`
	Limit  int    `json:"limit,omitempty"` // default 50, at most 500
}

// ConflictsResponse is one page of identification conflicts, newest first: items that
// matched several CIs, or offered only identifiers shared by several devices, and were not
// ingested.
type ConflictsResponse struct {
	Items      []store.Conflict `json:"items"`
	NextCursor string           `json:"next_cursor,omitempty"`
}

// ClassesResponse (classes) is the class model, for UIs and for producers writing payloads.
type ClassesResponse struct {
	Classes   []ClassInfo    `json:"classes"`   // parents before children
	Relations []RelationInfo `json:"relations"` // by name
	Families  []FamilyInfo   `json:"families"`  // by name
}

// ClassInfo is one class. Attributes holds every attribute with its type (string, int,
// float, bool, time, list, mac), inherited ones included; Inherited names those.
type ClassInfo struct {
	Name        string            `json:"name"`
	Parent      string            `json:"parent,omitempty"`
	Abstract    bool              `json:"abstract,omitempty"`
	Description string            `json:"description,omitempty"`
	Family      string            `json:"family,omitempty"`
	Attributes  map[string]string `json:"attributes"`
	Inherited   []string          `json:"inherited,omitempty"`
	Children    []string          `json:"children,omitempty"`
}

// RelationInfo is one relation type: from <name> to, with the classes (and their
// subclasses) allowed at each end.
type RelationInfo struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	From        []string `json:"from"`
	To          []string `json:"to"`
}

// FamilyInfo is an identification family: its rules in the order they are tried, and the
// classes a dependent family's CIs are identified through.
type FamilyInfo struct {
	Name    string     `json:"name"`
	Parents []string   `json:"parents,omitempty"`
	Rules   []RuleInfo `json:"rules"`
}

// RuleInfo is one identification rule and what it needs.
type RuleInfo struct {
	Name  string `json:"name"`
	Needs string `json:"needs"`
}

// IngestRequest (ingest) reconciles a payload synchronously, for manual edits and imports
// that want the outcome ("manual" is the highest-ranked source by default).
type IngestRequest struct {
	Payload envelope.CIPayload `json:"payload"`
}

// IngestResponse is what the ingest did: CIs created, updated and unchanged (with the
// payload refs that resolved to each), relations created, items refused as identification
// conflicts, items skipped because their parent was refused.
type IngestResponse = ire.Outcome

func (s *service) endpoints() map[string]bus.Endpoint {
	return map[string]bus.Endpoint{
		OpList:      bus.JSON(func(ctx context.Context, r ListRequest) (any, error) { return s.list(ctx, r) }),
		OpGet:       bus.JSON(func(ctx context.Context, r IDRequest) (any, error) { return s.get(ctx, r) }),
		OpHistory:   bus.JSON(func(ctx context.Context, r HistoryRequest) (any, error) { return s.history(ctx, r) }),
		OpRel:       bus.JSON(func(ctx context.Context, r IDRequest) (any, error) { return s.rel(ctx, r) }),
		OpGraph:     bus.JSON(func(ctx context.Context, r GraphRequest) (any, error) { return s.graph(ctx, r) }),
		OpCounts:    bus.JSON(func(ctx context.Context, _ struct{}) (any, error) { return s.counts(ctx) }),
		OpConflicts: bus.JSON(func(ctx context.Context, r PageRequest) (any, error) { return s.conflicts(ctx, r) }),
		OpClasses:   bus.JSON(func(ctx context.Context, _ struct{}) (any, error) { return s.classes(), nil }),
		OpIngest:    bus.JSON(func(ctx context.Context, r IngestRequest) (any, error) { return s.ingest(ctx, r) }),
	}
}

func badRequest(format string, args ...any) error {
	return bus.Errorf(http.StatusBadRequest, format, args...)
}

// pageSize checks a limit: 0 is the default, anything above MaxPageSize is refused rather
// than silently cut, so a client never mistakes a short page for the end.
func pageSize(limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultPageSize, nil
	case limit < 0 || limit > MaxPageSize:
		return 0, badRequest("limit %d: want 1 to %d (default %d); page with next_cursor", limit, MaxPageSize, DefaultPageSize)
	}
	return limit, nil
}

func needID(id string) error {
	if strings.TrimSpace(id) == "" {
		return badRequest("id: required (the id of a CI, as svc.cmdb.ls returns it)")
	}
	return nil
}

// fail turns a store or engine error into a ServiceError.
func (s *service) fail(op string, err error) error {
	var se *bus.ServiceError
	switch {
	case errors.As(err, &se):
		return se
	case errors.Is(err, store.ErrNotFound):
		return bus.Errorf(http.StatusNotFound, "%v; list CIs with svc.cmdb.ls (outpost ci ls)", strings.TrimPrefix(err.Error(), "store: "))
	case errors.Is(err, store.ErrBadCursor):
		return badRequest("cursor: %v; pass next_cursor of the previous page unchanged", err)
	case errors.Is(err, ire.ErrInvalid):
		return badRequest("%v", err)
	}
	s.log.Error("cmdb request failed", "op", op, "err", err)
	return bus.Errorf(http.StatusServiceUnavailable, "cmdb store unavailable: %v; try again shortly", err)
}

func (s *service) list(ctx context.Context, r ListRequest) (ListResponse, error) {
	limit, err := pageSize(r.Limit)
	if err != nil {
		return ListResponse{}, err
	}
	q := store.ListQuery{Search: r.Search, Stale: r.Stale, Cursor: r.Cursor, Limit: limit, SearchAttrs: s.model.SearchAttributes()}
	// Attributes a filter may name: those of the class (with what its subclasses add), or
	// of any class.
	scope := classes.Root
	if r.Class != "" {
		if _, ok := s.model.Class(r.Class); !ok {
			return ListResponse{}, badRequest("class: unknown class %q; svc.cmdb.classes lists them", r.Class)
		}
		scope = r.Class
		q.Classes = s.model.Descendants(r.Class)
	}
	known := map[string]bool{}
	for _, c := range s.model.Descendants(scope) {
		cl, _ := s.model.Class(c)
		for a := range cl.Attributes {
			known[a] = true
		}
	}
	names := make([]string, 0, len(r.Filters))
	for a := range r.Filters {
		names = append(names, a)
	}
	sort.Strings(names)
	for _, a := range names {
		if !known[a] {
			return ListResponse{}, badRequest("filters.%s: no class under %s has this attribute; svc.cmdb.classes lists them", a, scope)
		}
		q.Filters = append(q.Filters, store.AttrFilter{Attr: a, Value: r.Filters[a]})
	}
	page, err := s.st.List(ctx, q)
	if err != nil {
		return ListResponse{}, s.fail(OpList, err)
	}
	resp := ListResponse{Items: page.Items, NextCursor: page.Next}
	if r.Total && len(q.Filters) == 0 && strings.TrimSpace(r.Search) == "" && r.Stale == nil {
		exact, err := s.st.CountByClass(ctx)
		if err != nil {
			return ListResponse{}, s.fail(OpList, err)
		}
		n := s.model.RollUp(exact)[scope]
		resp.Total = &n
	}
	return resp, nil
}

func (s *service) get(ctx context.Context, r IDRequest) (GetResponse, error) {
	if err := needID(r.ID); err != nil {
		return GetResponse{}, err
	}
	d, err := s.st.Get(ctx, r.ID)
	if err != nil {
		return GetResponse{}, s.fail(OpGet, err)
	}
	return d, nil
}

func (s *service) history(ctx context.Context, r HistoryRequest) (HistoryResponse, error) {
	if err := needID(r.ID); err != nil {
		return HistoryResponse{}, err
	}
	limit, err := pageSize(r.Limit)
	if err != nil {
		return HistoryResponse{}, err
	}
	page, err := s.st.History(ctx, store.HistoryQuery{CIID: r.ID, Cursor: r.Cursor, Limit: limit})
	if err != nil {
		return HistoryResponse{}, s.fail(OpHistory, err)
	}
	if len(page.Items) == 0 && r.Cursor == "" {
		// Every CI has at least its "created" entry: none means no such CI.
		if _, err := s.st.Get(ctx, r.ID); err != nil {
			return HistoryResponse{}, s.fail(OpHistory, err)
		}
	}
	return HistoryResponse{Items: page.Items, NextCursor: page.Next}, nil
}

func (s *service) rel(ctx context.Context, r IDRequest) (RelResponse, error) {
	d, err := s.get(ctx, r)
	if err != nil {
		return RelResponse{}, err
	}
	return RelResponse{CI: store.Ref{ID: d.ID, Class: d.Class, Name: d.Name}, Outgoing: d.Outgoing, Incoming: d.Incoming}, nil
}

func (s *service) graph(ctx context.Context, r GraphRequest) (GraphResponse, error) {
	if err := needID(r.ID); err != nil {
		return GraphResponse{}, err
	}
	var errs []error
	switch {
	case r.Depth == 0:
		r.Depth = DefaultDepth
	case r.Depth < 0 || r.Depth > MaxDepth:
		errs = append(errs, fmt.Errorf("depth %d: want 1 to %d", r.Depth, MaxDepth))
	}
	switch {
	case r.MaxNodes == 0:
		r.MaxNodes = DefaultMaxNodes
	case r.MaxNodes < 0 || r.MaxNodes > MaxMaxNodes:
		errs = append(errs, fmt.Errorf("max_nodes %d: want 1 to %d", r.MaxNodes, MaxMaxNodes))
	}
	if len(errs) > 0 {
		return GraphResponse{}, badRequest("%v", errors.Join(errs...))
	}
	g, err := s.st.Graph(ctx, r.ID, r.Depth, r.MaxNodes)
	if err != nil {
		return GraphResponse{}, s.fail(OpGraph, err)
	}
	return g, nil
}

func (s *service) counts(ctx context.Context) (CountsResponse, error) {
	exact, err := s.st.CountByClass(ctx)
	if err != nil {
		return CountsResponse{}, s.fail(OpCounts, err)
	}
	rolled := s.model.RollUp(exact)
	return CountsResponse{Exact: exact, WithSubclasses: rolled, Total: rolled[classes.Root]}, nil
}

func (s *service) conflicts(ctx context.Context, r PageRequest) (ConflictsResponse, error) {
	limit, err := pageSize(r.Limit)
	if err != nil {
		return ConflictsResponse{}, err
	}
	page, err := s.st.Conflicts(ctx, store.ConflictQuery{Cursor: r.Cursor, Limit: limit})
	if err != nil {
		return ConflictsResponse{}, s.fail(OpConflicts, err)
	}
	return ConflictsResponse{Items: page.Items, NextCursor: page.Next}, nil
}

func (s *service) classes() ClassesResponse {
	m := s.model
	var resp ClassesResponse
	children := map[string][]string{}
	for _, c := range m.Classes() {
		if c.Parent != "" {
			children[c.Parent] = append(children[c.Parent], c.Name)
		}
	}
	for _, c := range m.Classes() {
		ci := ClassInfo{Name: c.Name, Parent: c.Parent, Abstract: c.Abstract, Description: c.Description,
			Family: c.Family, Attributes: make(map[string]string, len(c.Attributes)), Children: children[c.Name]}
		var parentAttrs map[string]classes.Type
		if p, ok := m.Class(c.Parent); ok {
			parentAttrs = p.Attributes
		}
		for a, t := range c.Attributes {
			ci.Attributes[a] = string(t)
			if _, ok := parentAttrs[a]; ok {
				ci.Inherited = append(ci.Inherited, a)
			}
		}
		sort.Strings(ci.Inherited)
		resp.Classes = append(resp.Classes, ci)
	}
	for _, name := range m.RelationTypes() {
		rt, _ := m.Relation(name)
		resp.Relations = append(resp.Relations, RelationInfo{Name: rt.Name, Description: rt.Description, From: rt.From, To: rt.To})
	}
	fams := map[string]bool{}
	for _, c := range m.Classes() {
		if f, ok := m.Family(c.Name); ok && !fams[f.Name] {
			fams[f.Name] = true
			fi := FamilyInfo{Name: f.Name, Parents: f.Parents, Rules: []RuleInfo{}}
			for _, r := range f.Rules {
				fi.Rules = append(fi.Rules, RuleInfo{Name: r.Name, Needs: r.Describe()})
			}
			resp.Families = append(resp.Families, fi)
		}
	}
	slices.SortFunc(resp.Families, func(a, b FamilyInfo) int { return strings.Compare(a.Name, b.Name) })
	return resp
}

// ingest reconciles a payload now, bypassing the partitions: the store keeps identity
// correct against a concurrent ingest of the same device, partitions only make that rare.
func (s *service) ingest(ctx context.Context, r IngestRequest) (IngestResponse, error) {
	if err := r.Payload.Validate(); err != nil {
		return IngestResponse{}, badRequest("payload: %v", err)
	}
	out, err := s.eng.Ingest(ctx, r.Payload)
	if err != nil {
		return IngestResponse{}, s.fail(OpIngest, err)
	}
	s.changes.publishOutcome(ctx, "", r.Payload, out)
	return out, nil
}
