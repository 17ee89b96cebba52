package mapping

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// The map in the CMDB: one application_service CI (identified by its name) containing the
// application CIs of the map's reachable nodes; each application runs_on its host (the
// application family's parent relation) and depends_on the applications it connects to.
// Applications are identified like discovery's (host, class, lowest listening port), so a
// mapped nginx is the nginx discovery found. Relations carry no attributes in the CMDB: how
// each edge was found lives in the service CI's `edges` attribute ("from -> to (found_by)"),
// so a changed edge is one changed attribute in the service's history and change events.

// edgeLine is how an edge reads in the service CI's edges attribute.
func edgeLine(e api.Edge) string {
	s := fmt.Sprintf("%s -> %s (%s)", e.From, e.To, e.FoundBy)
	if e.Dead {
		s += " dead"
	}
	return s
}

// payload builds the CMDB payload of a map and the payload ref of each node.
func payload(a api.AppService, m *api.Map, t *traversal, observed time.Time) (envelope.CIPayload, map[string]string) {
	p := envelope.CIPayload{Source: api.SourceName, Observed: observed}
	edges := make([]any, 0, len(m.Edges))
	for _, e := range m.Edges {
		edges = append(edges, edgeLine(e))
	}
	p.Items = append(p.Items, envelope.CIItem{Ref: "svc", Class: "application_service", Attributes: map[string]any{
		"name": a.Name, "entry": a.Entry, "site": a.Site, "edges": edges}})
	refOf := map[string]string{} // node id → app ref
	hosts := map[string]bool{}
	apps := map[string]bool{}
	for _, n := range m.Nodes {
		st := t.nodes[n.ID]
		if n.State != api.StateOK || st == nil || n.Hostname == "" {
			continue
		}
		href := "h:" + n.IP
		if !hosts[n.IP] {
			hosts[n.IP] = true
			class := "server"
			if strings.EqualFold(st.os, "Linux") {
				class = "linux_server"
			}
			p.Items = append(p.Items, envelope.CIItem{Ref: href, Class: class, Attributes: map[string]any{"name": n.Hostname, "ip_address": n.IP}})
		}
		ports := slices.Clone(st.ports)
		if len(ports) == 0 {
			ports = []int{n.Port}
		}
		slices.Sort(ports)
		class := n.Class
		if class == "" {
			class = "application"
		}
		name := n.Application
		if name == "" {
			name = n.Process
		}
		aref := fmt.Sprintf("a:%s:%s:%d", n.IP, class, ports[0])
		refOf[n.ID] = aref
		if apps[aref] {
			continue
		}
		apps[aref] = true
		tcp := make([]any, len(ports))
		for i, v := range ports {
			tcp[i] = v
		}
		attrs := map[string]any{"name": name, "port": ports[0], "tcp_ports": tcp, "running": true}
		if n.Process != "" {
			attrs["process_name"] = n.Process
		}
		p.Items = append(p.Items, envelope.CIItem{Ref: aref, Class: class, Parent: href, Attributes: attrs})
		p.Relations = append(p.Relations, envelope.CIRelation{Type: "contains", From: "svc", To: aref})
	}
	seen := map[[2]string]bool{}
	for _, e := range m.Edges {
		from, to := refOf[e.From], refOf[e.To]
		if from == "" || to == "" || from == to || seen[[2]string{from, to}] {
			continue
		}
		seen[[2]string{from, to}] = true
		p.Relations = append(p.Relations, envelope.CIRelation{Type: "depends_on", From: from, To: to})
	}
	return p, refOf
}

// toCMDB reconciles the map through the IRE and records what it did and the CI ids.
func (s *service) toCMDB(ctx context.Context, a api.AppService, m *mapped, t *traversal) error {
	p, refOf := payload(a, &m.Map, t, s.now())
	out, err := cmdbapi.Ingest.Call(ctx, s.deps.NC, cmdbapi.IngestRequest{Payload: p})
	if err != nil {
		return err
	}
	ids := map[string]string{}
	for _, group := range [][]cmdbapi.Change{out.Created, out.Updated, out.Unchanged} {
		for _, c := range group {
			for _, r := range c.Refs {
				ids[r] = c.ID
			}
		}
	}
	m.CMDB = api.CMDBOutcome{Created: len(out.Created), Updated: len(out.Updated), Unchanged: len(out.Unchanged),
		Relations: len(out.Relations), Conflicts: []string{}}
	for _, c := range out.Conflicts {
		m.CMDB.Conflicts = append(m.CMDB.Conflicts, fmt.Sprintf("%s (%s): %s", c.Ref, c.Class, c.Reason))
	}
	for i := range m.Nodes {
		n := &m.Nodes[i]
		n.CIID = ids[refOf[n.ID]]
		n.HostCIID = ids["h:"+n.IP]
	}
	m.serviceCI = ids["svc"]
	return nil
}
