// Package cmdb is the contract of the CMDB service (svc.cmdb.<op>): CI queries, history,
// relations, graphs, counts, conflicts, the class model and synchronous ingest. Requests are
// decoded strictly (an unknown field is a 400 naming it); errors are bus.ServiceErrors: 400
// bad input (naming the field), 404 unknown CI, 503 store unavailable (retry). The store's
// query results are these types, so what the store returns is what crosses the wire.
package cmdb

import (
	"encoding/json"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Service is the service's name on the bus.
const Service = "cmdb"

// Operations of svc.cmdb.<op>.
var (
	List      = bus.Op[ListRequest, ListResponse]{Service: Service, Name: "ls"}
	Get       = bus.Op[IDRequest, Detail]{Service: Service, Name: "get"}
	History   = bus.Op[HistoryRequest, HistoryResponse]{Service: Service, Name: "history"}
	Rel       = bus.Op[IDRequest, RelResponse]{Service: Service, Name: "rel"}
	GraphOp   = bus.Op[GraphRequest, Graph]{Service: Service, Name: "graph"}
	Counts    = bus.Op[struct{}, CountsResponse]{Service: Service, Name: "counts"}
	Conflicts = bus.Op[PageRequest, ConflictsResponse]{Service: Service, Name: "conflicts"}
	Classes   = bus.Op[struct{}, ClassesResponse]{Service: Service, Name: "classes"}
	Ingest    = bus.Op[IngestRequest, Outcome]{Service: Service, Name: "ingest"}
)

// Ops lists every operation of the service.
func Ops() []bus.OpSpec {
	return []bus.OpSpec{List.Spec(), Get.Spec(), History.Spec(), Rel.Spec(), GraphOp.Spec(), Counts.Spec(),
		Conflicts.Spec(), Classes.Spec(), Ingest.Spec()}
}

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
	Items      []CI   `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
	Total      *int64 `json:"total,omitempty"`
}

// IDRequest names one CI (get, rel).
type IDRequest struct {
	ID string `json:"id"`
}

// HistoryRequest (history) pages through a CI's changes, newest first.
type HistoryRequest struct {
	ID     string `json:"id"`
	Cursor string `json:"cursor,omitempty"`
	Limit  int    `json:"limit,omitempty"` // default 50, at most 500
}

// HistoryResponse is one page of history.
type HistoryResponse struct {
	Items      []HistoryEntry `json:"items"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

// RelResponse (rel) is a CI's relations in both directions.
type RelResponse struct {
	CI       Ref        `json:"ci"`
	Outgoing []Relation `json:"outgoing"`
	Incoming []Relation `json:"incoming"`
}

// GraphRequest (graph) asks for the CIs within Depth relations of ID, in either direction.
type GraphRequest struct {
	ID       string `json:"id"`
	Depth    int    `json:"depth,omitempty"`     // default 1, at most 5
	MaxNodes int    `json:"max_nodes,omitempty"` // default 200, at most 2000
}

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
	Items      []Conflict `json:"items"`
	NextCursor string     `json:"next_cursor,omitempty"`
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

// RuleInfo is one identification rule and what it needs: Needs for people, Attributes or
// Child as data for producers that pick a rule (an import map's coalesce).
type RuleInfo struct {
	Name  string `json:"name"`
	Needs string `json:"needs"`
	// Attributes are the CI's own attributes the rule matches on, all of them together
	// ("class" among them when identity is per class); empty for a rule on child items.
	Attributes []string `json:"attributes,omitempty"`
	// Child is set for a rule that takes its values from child items of the payload.
	Child *RuleChild `json:"child,omitempty"`
}

// RuleChild names the child items a rule reads: an attribute of children of a family (a
// host's network adapters' mac_address).
type RuleChild struct {
	Family    string `json:"family"`
	Attribute string `json:"attribute"`
}

// IngestRequest (ingest) reconciles a payload synchronously, for manual edits and imports
// that want the outcome ("manual" is the highest-ranked source by default).
type IngestRequest struct {
	Payload envelope.CIPayload `json:"payload"`
}

// Ref names a CI.
type Ref struct {
	ID    string `json:"id"`
	Class string `json:"class"`
	Name  string `json:"name"`
}

// CI is a CI as queries return it. Attribute values are decoded JSON (numbers as
// json.Number, times as RFC 3339 text).
type CI struct {
	ID                string         `json:"id"`
	Class             string         `json:"class"`
	Name              string         `json:"name"`
	Attributes        map[string]any `json:"attributes"`
	Created           time.Time      `json:"created"`
	Updated           time.Time      `json:"updated"`
	LastSeen          time.Time      `json:"last_seen"`
	Stale             bool           `json:"stale"`
	OperationalStatus string         `json:"operational_status"`
}

// AttrSource tells which source set an attribute's current value and when it observed it.
type AttrSource struct {
	Source   string    `json:"source"`
	Observed time.Time `json:"observed"`
}

// Key is an identifier: a normalised value of a kind (rule name) within a family.
type Key struct {
	Family string `json:"family"`
	Kind   string `json:"kind"`
	Value  string `json:"value"`
}

func (k Key) String() string { return k.Family + "/" + k.Kind + "=" + k.Value }

// Relation is a relation seen from one of its CIs; Peer is the CI at the other end.
type Relation struct {
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Peer     Ref       `json:"peer"`
	Source   string    `json:"source"`
	Created  time.Time `json:"created"`
	LastSeen time.Time `json:"last_seen"`
}

// HistoryEntry is one change of a CI. Old and New are JSON values, nil when absent.
type HistoryEntry struct {
	ID     string          `json:"id"`
	CIID   string          `json:"ci_id"`
	Attr   string          `json:"attribute"`
	Old    json.RawMessage `json:"old"`
	New    json.RawMessage `json:"new"`
	Source string          `json:"source"`
	Time   time.Time       `json:"time"`
}

// Detail (get) is one CI with everything known about it: attributes with the source of
// each value, identifiers, relations in both directions with the CI at the other end, and
// its latest 100 history entries (history pages through the rest).
type Detail struct {
	CI
	Sources     map[string]AttrSource `json:"sources"`
	Identifiers []Key                 `json:"identifiers"`
	Outgoing    []Relation            `json:"outgoing"`
	Incoming    []Relation            `json:"incoming"`
	History     []HistoryEntry        `json:"history"` // newest first, at most 100
}

// Node is a CI in a graph with its distance from the start.
type Node struct {
	Ref
	Depth int `json:"depth"`
}

// Edge is a relation in a graph.
type Edge struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	From string `json:"from"`
	To   string `json:"to"`
}

// Graph (graph) is the neighbourhood of a CI. Truncated tells that max_nodes cut it short.
type Graph struct {
	Nodes     []Node `json:"nodes"`
	Edges     []Edge `json:"edges"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Conflict is a recorded identification conflict.
type Conflict struct {
	ID         string          `json:"id"`
	Source     string          `json:"source"`
	NativeKey  string          `json:"native_key,omitempty"`
	Class      string          `json:"class"`
	Ref        string          `json:"ref"`
	Item       json.RawMessage `json:"item"`
	Candidates []string        `json:"candidates"`
	Reason     string          `json:"reason"`
	FirstSeen  time.Time       `json:"first_seen"`
	LastSeen   time.Time       `json:"last_seen"`
	Count      int64           `json:"count"`
}

// Outcome (ingest) is what one ingest did: CIs created, updated and unchanged (with the
// payload refs that resolved to each), relations created, items refused as identification
// conflicts, items skipped because their parent was refused.
type Outcome struct {
	Created   []Change `json:"created,omitempty"`
	Updated   []Change `json:"updated,omitempty"`
	Unchanged []Change `json:"unchanged,omitempty"`
	// Relations lists the relations created.
	Relations []RelationChange `json:"relations,omitempty"`
	// Conflicts lists items that were not ingested because identification refused to
	// decide; they are recorded in the store's conflicts list too.
	Conflicts []ConflictReport `json:"conflicts,omitempty"`
	// Skipped lists items not ingested because their parent was not.
	Skipped []Skip `json:"skipped,omitempty"`
}

// Changed returns the created and updated CIs: the ones to publish change events for.
func (o Outcome) Changed() []Change {
	return append(append([]Change{}, o.Created...), o.Updated...)
}

// Change is one CI an ingest touched. Refs are the payload items that resolved to it.
type Change struct {
	ID    string   `json:"id"`
	Class string   `json:"class"`
	Refs  []string `json:"refs"`
	// Attributes names what changed ("class" and "stale" included), sorted.
	Attributes []string `json:"attributes,omitempty"`
}

// RelationChange is a relation an ingest created.
type RelationChange struct {
	Type string `json:"type"`
	From string `json:"from"`
	To   string `json:"to"`
}

// ConflictReport is an item identification refused to merge or could not identify.
type ConflictReport struct {
	Ref        string   `json:"ref"`
	Class      string   `json:"class"`
	Reason     string   `json:"reason"`
	Candidates []string `json:"candidates,omitempty"`
}

// Skip is an item left out because its parent was not ingested.
type Skip struct {
	Ref    string `json:"ref"`
	Reason string `json:"reason"`
}
