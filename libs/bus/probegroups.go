package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// A site's probes are pulled through few durable consumers, not one per (priority,
// capability, lane): each consumer was a pull request held at the hub, a file store and a
// callout grant, and 180 of them per site made 100 sites (18,000 consumers) unworkable.
//
// A probe's cell is its (capability, lane). The cells the site's approved bridges serve are
// partitioned into groups of cells served by exactly the same bridges; each group is one
// durable consumer per priority with one filter subject per cell (or per capability when it
// holds all lanes of it). A site whose bridges all take the same work has one consumer per
// priority; a bridge dedicated to some applications shares the groups of the cells it
// serves with its siblings and never holds one with a cell it does not serve. The groups
// are disjoint, as a WorkQueue stream demands of its consumers' filters (error 10100).

// ProbeProfile is what one bridge takes: its capabilities and applications (empty: all).
type ProbeProfile struct {
	Capabilities []string `json:"capabilities"`
	Apps         []string `json:"apps,omitempty"`
}

// ProbeGroup is a set of cells served by the same bridges of a site.
type ProbeGroup struct {
	// Key names the group's consumers: a digest of Cells, so the same cells keep the same
	// consumers whichever bridges come and go around them.
	Key string `json:"key"`
	// Cells are "capability.lane", sorted.
	Cells []string `json:"cells"`
	// Bridges serving every cell of the group, sorted.
	Bridges []string `json:"bridges"`
}

// ProbeGroups partitions the cells the bridges serve (capabilities that are not valid
// subject tokens are skipped, as they could never be probed). Sorted by Key.
func ProbeGroups(bridges map[string]ProbeProfile) []ProbeGroup {
	servedBy := map[string][]string{} // cell → bridges
	names := make([]string, 0, len(bridges))
	for n := range bridges {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := bridges[n]
		for _, c := range p.Capabilities {
			if !ValidName(c) {
				continue
			}
			for _, lane := range Lanes(p.Apps) {
				cell := c + "." + lane
				if !slices.Contains(servedBy[cell], n) {
					servedBy[cell] = append(servedBy[cell], n)
				}
			}
		}
	}
	bySig := map[string]*ProbeGroup{}
	for cell, bs := range servedBy {
		sig := strings.Join(bs, ",")
		g := bySig[sig]
		if g == nil {
			g = &ProbeGroup{Bridges: bs}
			bySig[sig] = g
		}
		g.Cells = append(g.Cells, cell)
	}
	out := make([]ProbeGroup, 0, len(bySig))
	for _, g := range bySig {
		sort.Strings(g.Cells)
		sum := sha256.Sum256([]byte(strings.Join(g.Cells, ",")))
		g.Key = hex.EncodeToString(sum[:16]) // 128 bits: two cell sets never share a consumer name
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b ProbeGroup) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Filters are the group's filter subjects at a priority: a capability whose every lane is
// in the group is one probe.<site>.<priority>.<capability>.* filter (lanes are a closed set,
// so the wildcard matches nothing outside the group).
func (g ProbeGroup) Filters(site, priority string) []string {
	lanesOf := map[string][]string{}
	var caps []string
	for _, cell := range g.Cells {
		c, lane, _ := strings.Cut(cell, ".")
		if _, ok := lanesOf[c]; !ok {
			caps = append(caps, c)
		}
		lanesOf[c] = append(lanesOf[c], lane)
	}
	all := len(Lanes(nil))
	var out []string
	for _, c := range caps {
		if len(lanesOf[c]) == all {
			out = append(out, ProbeSubject(site, priority, c, "*"))
			continue
		}
		for _, lane := range lanesOf[c] {
			out = append(out, ProbeSubject(site, priority, c, lane))
		}
	}
	return out
}

// Serves reports whether the group's consumers are the bridge's.
func (g ProbeGroup) Serves(bridge string) bool { return slices.Contains(g.Bridges, bridge) }

// GroupKeysOf are the keys of the groups a bridge pulls.
func GroupKeysOf(groups []ProbeGroup, bridge string) []string {
	var out []string
	for _, g := range groups {
		if g.Serves(bridge) {
			out = append(out, g.Key)
		}
	}
	return out
}

// ProbeConsumer names the durable pull consumer of a site's group at a priority. Consumer
// names are one subject token, so the parts are joined with "_"; site names therefore may
// not contain "_" (see ValidName), and ProbeConsumerPrefix(site) is the site's alone.
func ProbeConsumer(site, priority, groupKey string) string {
	return ProbeConsumerPrefix(site) + priority + "_" + groupKey
}

// ProbeConsumerPrefix starts the name of every probe consumer of the site.
func ProbeConsumerPrefix(site string) string { return "probe_" + site + "_" }

// ProbeCapability is the capability token of a probe subject (ProbeSubject), "" when the
// subject is not one.
func ProbeCapability(subject string) string {
	t := strings.Split(subject, ".")
	if len(t) != 5 || t[0] != "probe" {
		return ""
	}
	return t[3]
}

// ErrNoProbeConsumer: no consumer of the site takes the cell.
var ErrNoProbeConsumer = errors.New("no probe consumer takes this capability and lane")

// FindProbeConsumer returns the name of the site's consumer whose filters take the probes
// of (priority, capability, lane): for the hub's tools and tests (it lists the stream's
// consumers, which bridges may not do).
func FindProbeConsumer(ctx context.Context, js jetstream.JetStream, site, priority, capability, lane string) (string, error) {
	st, err := js.Stream(ctx, StreamProbes)
	if err != nil {
		return "", err
	}
	subject := ProbeSubject(site, priority, capability, lane)
	lister := st.ListConsumers(ctx)
	found := ""
	// Read the list to its end: the lister's goroutine blocks until it is.
	for ci := range lister.Info() {
		if found != "" || !strings.HasPrefix(ci.Name, ProbeConsumerPrefix(site)) {
			continue
		}
		filters := ci.Config.FilterSubjects
		if ci.Config.FilterSubject != "" {
			filters = append(filters, ci.Config.FilterSubject)
		}
		for _, f := range filters {
			if subjectMatches(f, subject) {
				found = ci.Name
			}
		}
	}
	if err := lister.Err(); err != nil {
		return "", err
	}
	if found == "" {
		return "", ErrNoProbeConsumer
	}
	return found, nil
}

// subjectMatches reports whether a literal subject matches a filter with * and > wildcards.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}
