// Package mapping is the contract of Service Mapping (svc.mapping.<op>): application services
// declared by their entry point and mapped top-down through a site's bridges — which process
// answers there, what it connects to, and so on down to the databases. The mapping service
// serves it; the gateway relays it under /api/v1/services and the CLI's `outpost services`
// decodes its answers.
package mapping

import (
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/page"
)

// Service is the name on the bus: svc.mapping.<op>.
const Service = "mapping"

// SourceName is the CMDB source of everything Service Mapping reports.
const SourceName = "service_mapping"

// Operations of svc.mapping.<op>.
var (
	Add   = bus.Op[AddRequest, AppService]{Service: Service, Name: "add"}
	List  = bus.Op[page.Request, ListReply]{Service: Service, Name: "ls"}
	Show  = bus.Op[NameRequest, Detail]{Service: Service, Name: "show"}
	MapOp = bus.Op[MapRequest, Detail]{Service: Service, Name: "map"}
	Remap = bus.Op[NameRequest, Detail]{Service: Service, Name: "remap"}
)

// Ops lists every operation of the service.
func Ops() []bus.OpSpec {
	return []bus.OpSpec{Add.Spec(), List.Spec(), Show.Spec(), MapOp.Spec(), Remap.Spec()}
}

// Node kinds and states.
const (
	// StateOK: the process answering there was found and identified (or not: Application empty).
	StateOK = "ok"
	// StateUnreachable: the host did not answer the probe, or nothing listens on the port
	// (a dead backend). Kept in the map, never dropped.
	StateUnreachable = "unreachable"
	// StateExternal: outside the site's ranges; not probed.
	StateExternal = "external"
	// StateDepthLimit: beyond the map's depth; not probed.
	StateDepthLimit = "depth_limit"
	// StateUnresolved: a name the configuration gave that did not resolve.
	StateUnresolved = "unresolved"
)

// How an edge was found.
const (
	FoundConnection    = "connection"
	FoundConfiguration = "configuration"
	FoundBoth          = "both"
)

// AddRequest declares an application service by its entry point.
type AddRequest struct {
	Name string `json:"name" doc:"the application service's name (letters, digits, - _ .)"`
	// Entry is https://host:443/path, http://host/ or host:port.
	Entry string `json:"entry" doc:"entry point: https://host:443/path, http://host/ or host:port"`
	// Site is the site whose bridges map it; empty: the site whose ranges hold the entry's address.
	Site string `json:"site,omitempty" doc:"site whose bridges map it (default: the site whose ranges hold the entry)"`
	// Depth bounds how many hops from the entry are followed (default 6, at most 20).
	Depth int `json:"depth,omitempty" min:"0" max:"20" doc:"hops followed from the entry (default 6)"`
	// Every re-maps on a schedule ("1h"); empty: the service default, "0": never.
	Every string `json:"every,omitempty" format:"duration" doc:"re-map period (default 1h; 0: never)"`
}

// AppService is a declared application service and the state of its map.
type AppService struct {
	Name  string `json:"name"`
	Entry string `json:"entry"`
	Site  string `json:"site"`
	// Host and Port are the entry's resolved address and port.
	Host  string `json:"host"`
	Port  int    `json:"port"`
	Depth int    `json:"depth"`
	Every string `json:"every"`
	// State: new, mapping, mapped or failed.
	State     string    `json:"state"`
	Error     string    `json:"error,omitempty"`
	Created   time.Time `json:"created"`
	Mapped    time.Time `json:"mapped,omitzero"`
	NextMap   time.Time `json:"next_map,omitzero"`
	Version   int       `json:"version"`
	Nodes     int       `json:"nodes"`
	Edges     int       `json:"edges"`
	CIID      string    `json:"ci_id,omitempty"`
	Unhealthy int       `json:"unhealthy"`
}

// Service states.
const (
	ServiceNew     = "new"
	ServiceMapping = "mapping"
	ServiceMapped  = "mapped"
	ServiceFailed  = "failed"
)

// ListReply is a page of application services.
type ListReply struct {
	Services   []AppService `json:"services"`
	NextCursor string       `json:"next_cursor"`
}

// NameRequest names an application service.
type NameRequest struct {
	Name string `json:"name"`
}

// MapRequest asks for a service's map; Wait maps it first when it has none yet.
type MapRequest struct {
	Name string `json:"name"`
	Wait bool   `json:"wait,omitempty"`
}

// Detail is a service with its current map (nil before the first mapping).
type Detail struct {
	Service AppService `json:"service"`
	Map     *Map       `json:"map,omitempty"`
}

// Map is one mapping of an application service: the endpoints reached from the entry and
// the traffic between them.
type Map struct {
	Service string    `json:"service"`
	Entry   string    `json:"entry"`
	Site    string    `json:"site"`
	Version int       `json:"version"`
	Mapped  time.Time `json:"mapped"`
	// Root is the entry node's id (IP:PORT).
	Root  string `json:"root"`
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
	// Changes are the edges that differ from the previous map (empty on the first).
	Changes []EdgeChange `json:"changes"`
	// Probes is how many probes the mapping sent; Warnings what it could not do.
	Probes   int      `json:"probes"`
	Warnings []string `json:"warnings"`
	// CMDB is what the CMDB made of the map: CIs created/updated/unchanged, relations created.
	CMDB CMDBOutcome `json:"cmdb"`
}

// Node is one endpoint of a map: a process listening on IP:PORT, or an endpoint that was
// not probed (external, beyond the depth) or did not answer (unreachable).
type Node struct {
	ID    string `json:"id"` // IP:PORT
	IP    string `json:"ip"`
	Port  int    `json:"port"`
	State string `json:"state"`
	// Reason says why a node is not ok.
	Reason string `json:"reason,omitempty"`
	// Hostname is the host's name (hostname) when probed; Name what the configuration called it.
	Hostname string `json:"hostname,omitempty"`
	Name     string `json:"name,omitempty"`
	// Application is the pattern that recognised the process (nginx, tomcat…), empty when
	// none did; Class the CI class it becomes (web_server, app_server, database…).
	Application string `json:"application,omitempty"`
	Class       string `json:"class,omitempty"`
	Process     string `json:"process,omitempty"`
	PID         int    `json:"pid,omitempty"`
	Depth       int    `json:"depth"`
	// CIID is the application CI in the CMDB; HostCIID the host it runs on.
	CIID     string `json:"ci_id,omitempty"`
	HostCIID string `json:"host_ci_id,omitempty"`
	// Health is the worst open correlation alert on the node's CIs (empty: none).
	Health string `json:"health,omitempty"`
}

// Edge is traffic from one node to another: From connects to To.
type Edge struct {
	From string `json:"from"`
	To   string `json:"to"`
	// FoundBy: connection (an established socket), configuration, or both.
	FoundBy string `json:"found_by"`
	// Dead: the target is unreachable.
	Dead bool `json:"dead,omitempty"`
	// Source names the configuration file (and the name it gave) when FoundBy has configuration.
	Source string `json:"source,omitempty"`
}

// EdgeChange is an edge added, removed, changed or moved since the previous map.
type EdgeChange struct {
	// Change: added, removed, changed (found_by or dead differs), or moved (the only edge
	// that left From was replaced by the only new one from it: a backend that moved).
	Change string `json:"change"`
	Edge   Edge   `json:"edge"`
	// Previous is the edge a moved one replaces.
	Previous *Edge `json:"previous,omitempty"`
}

// CMDBOutcome counts what one ingest of the map did.
type CMDBOutcome struct {
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
	Relations int `json:"relations"`
	// Conflicts are items identification refused to decide on.
	Conflicts []string `json:"conflicts"`
}
