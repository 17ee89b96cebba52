package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Applications a bridge can be dedicated to (outpost-bridge --apps), as MID server users know
// them. A probe travels in its application's lane: probe.<site>.<priority>.<capability>.<lane>,
// pulled through the durable consumer of the site's group holding that cell (probegroups.go);
// a bridge is given (by the auth callout) and pulls only groups of cells it serves, so a
// bridge run with --apps orchestration is never delivered a discovery probe — NATS refuses it
// every consumer whose filters take one.
const (
	AppDiscovery      = "discovery"
	AppOrchestration  = "orchestration"
	AppImport         = "import"
	AppCorrelation    = "correlation"
	AppServiceMapping = "service_mapping"
	// LaneAdhoc carries probes of no selectable application: `outpost probe` (app "adhoc")
	// and tools' own apps. Every bridge serves it: an operator testing a site's bridges
	// reaches each of them whatever it is dedicated to.
	LaneAdhoc = "adhoc"
)

// BridgeApps are the applications --apps accepts; a bridge without --apps serves them all.
var BridgeApps = []string{AppDiscovery, AppOrchestration, AppImport, AppCorrelation, AppServiceMapping}

// ProbeLane is the lane of a probe of app (its envelope's App): the application's own when
// it is one of BridgeApps (the importer's probes, app "importer", are the import
// application's), LaneAdhoc otherwise.
func ProbeLane(app string) string {
	if app == "importer" {
		return AppImport
	}
	if slices.Contains(BridgeApps, app) {
		return app
	}
	return LaneAdhoc
}

// CheckApps reports every name that is not one of BridgeApps.
func CheckApps(apps []string) error {
	var errs []error
	for _, a := range apps {
		if !slices.Contains(BridgeApps, a) {
			errs = append(errs, fmt.Errorf("--apps %q: not an application; choose among %s", a, strings.Join(BridgeApps, ",")))
		}
	}
	return errors.Join(errs...)
}

// Lanes are the probe lanes a bridge serving apps pulls (empty apps: every application),
// sorted, LaneAdhoc included.
func Lanes(apps []string) []string {
	if len(apps) == 0 {
		apps = BridgeApps
	}
	out := []string{LaneAdhoc}
	for _, a := range apps {
		if slices.Contains(BridgeApps, a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out
}

// Serves reports whether a bridge of apps (empty: all) serves the lane.
func Serves(apps []string, lane string) bool {
	return lane == LaneAdhoc || len(apps) == 0 || slices.Contains(apps, lane)
}

// SiteBridges is which applications each approved bridge of a site serves: the agents
// service keeps it in KV sites under SiteBridgesKey(site), rebuilt from its registry on every
// enrollment, approval, revocation and forget; PublishProbe reads it to fail a probe at once
// when no bridge of its site serves its application, instead of leaving it to expire at its
// deadline. An agent with no apps listed serves every application.
type SiteBridges struct {
	Site    string              `json:"site"`
	Bridges map[string][]string `json:"bridges"`
	// Capabilities each bridge offers: with Bridges, what ProbeGroups partitions.
	Capabilities map[string][]string `json:"capabilities,omitempty"`
}

// Groups are the site's probe consumer groups (ProbeGroups of its bridges' profiles).
func (sb SiteBridges) Groups() []ProbeGroup {
	profiles := make(map[string]ProbeProfile, len(sb.Bridges))
	for name, apps := range sb.Bridges {
		profiles[name] = ProbeProfile{Capabilities: sb.Capabilities[name], Apps: apps}
	}
	return ProbeGroups(profiles)
}

// SiteBridgesKey is where a site's SiteBridges lives in KV sites.
func SiteBridgesKey(site string) string { return "bridges." + site }

// CheckServed returns nil when some bridge of sb serves lane, else a 503 (code
// unavailable: retrying helps once such a bridge is approved) saying which bridges the site
// has and what to do.
func (sb SiteBridges) CheckServed(lane string) error {
	var have []string
	for name, apps := range sb.Bridges {
		if Serves(apps, lane) {
			return nil
		}
		have = append(have, name+" ("+strings.Join(apps, ",")+")")
	}
	sort.Strings(have)
	what := "it has no approved bridge"
	if len(have) > 0 {
		what = "its bridges serve only: " + strings.Join(have, "; ")
	}
	return Errorf(503, "site %s has no bridge serving %s: %s; run a bridge of the site with --apps including %s (or without --apps, which serves every application)",
		sb.Site, lane, what, lane)
}

// siteBridgesTTL bounds how stale a publisher's view of a site's bridges may be: a bridge
// approved just now is seen within it.
const siteBridgesTTL = time.Second

type siteBridgesEntry struct {
	at    time.Time
	sb    SiteBridges
	found bool
}

// siteBridgesCache is a publisher's short-lived copy of the sites' SiteBridges records.
type siteBridgesCache struct {
	mu      sync.Mutex
	kv      jetstream.KeyValue
	entries map[string]siteBridgesEntry
}

// lookup returns the site's record (found false when the site has none: no bridge was ever
// approved there, and probes queue until one is — a site is often set up before its bridge).
func (c *siteBridgesCache) lookup(ctx context.Context, js jetstream.JetStream, site string) (SiteBridges, bool, error) {
	c.mu.Lock()
	e, ok := c.entries[site]
	kv := c.kv
	c.mu.Unlock()
	if ok && time.Since(e.at) < siteBridgesTTL {
		return e.sb, e.found, nil
	}
	if kv == nil {
		var err error
		if kv, err = js.KeyValue(ctx, KVSites); err != nil {
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				return SiteBridges{}, false, nil // no registry on this bus (a bare test bus)
			}
			return SiteBridges{}, false, err
		}
	}
	e = siteBridgesEntry{at: time.Now()}
	ent, err := kv.Get(ctx, SiteBridgesKey(site))
	switch {
	case err == nil:
		if err := json.Unmarshal(ent.Value(), &e.sb); err != nil {
			return SiteBridges{}, false, fmt.Errorf("%s: %w", SiteBridgesKey(site), err)
		}
		e.found = true
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return SiteBridges{}, false, err
	}
	c.mu.Lock()
	c.kv = kv
	if c.entries == nil {
		c.entries = map[string]siteBridgesEntry{}
	}
	c.entries[site] = e
	c.mu.Unlock()
	return e.sb, e.found, nil
}
