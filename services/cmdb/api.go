package cmdb

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// Operations of svc.cmdb.<op>: the contract's (libs/api/cmdb), where requests, answers and
// errors are documented.
var (
	OpList      = cmdbapi.List.Name
	OpGet       = cmdbapi.Get.Name
	OpHistory   = cmdbapi.History.Name
	OpRel       = cmdbapi.Rel.Name
	OpGraph     = cmdbapi.GraphOp.Name
	OpCounts    = cmdbapi.Counts.Name
	OpConflicts = cmdbapi.Conflicts.Name
	OpClasses   = cmdbapi.Classes.Name
	OpIngest    = cmdbapi.Ingest.Name
)

// Limits of the query API.
const (
	DefaultPageSize = cmdbapi.DefaultPageSize
	MaxPageSize     = cmdbapi.MaxPageSize
	DefaultDepth    = cmdbapi.DefaultDepth
	MaxDepth        = cmdbapi.MaxDepth
	DefaultMaxNodes = cmdbapi.DefaultMaxNodes
	MaxMaxNodes     = cmdbapi.MaxMaxNodes
)

// Requests and answers of svc.cmdb.*.
type (
	ListRequest       = cmdbapi.ListRequest
	ListResponse      = cmdbapi.ListResponse
	IDRequest         = cmdbapi.IDRequest
	GetResponse       = cmdbapi.Detail
	HistoryRequest    = cmdbapi.HistoryRequest
	HistoryResponse   = cmdbapi.HistoryResponse
	RelResponse       = cmdbapi.RelResponse
	GraphRequest      = cmdbapi.GraphRequest
	GraphResponse     = cmdbapi.Graph
	CountsResponse    = cmdbapi.CountsResponse
	PageRequest       = cmdbapi.PageRequest
	ConflictsResponse = cmdbapi.ConflictsResponse
	ClassesResponse   = cmdbapi.ClassesResponse
	ClassInfo         = cmdbapi.ClassInfo
	RelationInfo      = cmdbapi.RelationInfo
	FamilyInfo        = cmdbapi.FamilyInfo
	RuleInfo          = cmdbapi.RuleInfo
	RuleChild         = cmdbapi.RuleChild
	IngestRequest     = cmdbapi.IngestRequest
	IngestResponse    = cmdbapi.Outcome
)

func (s *service) endpoints() map[string]bus.Endpoint {
	return map[string]bus.Endpoint{
		OpList:      cmdbapi.List.Handle(s.list),
		OpGet:       cmdbapi.Get.Handle(s.get),
		OpHistory:   cmdbapi.History.Handle(s.history),
		OpRel:       cmdbapi.Rel.Handle(s.rel),
		OpGraph:     cmdbapi.GraphOp.Handle(s.graph),
		OpCounts:    cmdbapi.Counts.Handle(func(ctx context.Context, _ struct{}) (CountsResponse, error) { return s.counts(ctx) }),
		OpConflicts: cmdbapi.Conflicts.Handle(s.conflicts),
		OpClasses:   cmdbapi.Classes.Handle(func(context.Context, struct{}) (ClassesResponse, error) { return s.classes(), nil }),
		OpIngest:    cmdbapi.Ingest.Handle(s.ingest),
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
				ri := RuleInfo{Name: r.Name, Needs: r.Describe(), Attributes: r.Attributes}
				if r.Children != nil {
					ri.Child = &RuleChild{Family: r.Children.Family, Attribute: r.Children.Attribute}
				}
				fi.Rules = append(fi.Rules, ri)
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
	prep, err := s.eng.Prepare(r.Payload)
	if err != nil {
		return IngestResponse{}, s.fail(OpIngest, err)
	}
	s.changes.announce(prep, envelope.Meta{}, r.Payload, payloadDigest(r.Payload)) // change events through the outbox
	res := s.eng.IngestBatch(ctx, []*ire.Prepared{prep})[0]
	if res.Err != nil {
		return IngestResponse{}, s.fail(OpIngest, res.Err)
	}
	s.drain.notify()
	return res.Outcome, nil
}
