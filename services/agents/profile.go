package agents

import (
	"fmt"
	"slices"
	"strings"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
)

// Profile is what a bridge takes (applications and capabilities).
type Profile = agentsapi.Profile

// A bridge asserts its profile at every enrollment, but its rights (the probe consumers the
// callout grants, and with them the site's sealed credentials of those kinds) follow the
// profile an admin approved: a bridge asking for more is recorded as requesting it and
// granted only what lies in both, until `outpost agents approve` again. A narrower profile
// applies at once, as the intersection is narrower too.

// maxCapabilities bounds what one enrollment may list: the catalog has far fewer, and the
// list lands in the registry, the callout's grants and the site's record.
const maxCapabilities = 32

// noApps stands for "no application" in an effective profile whose approved and asserted
// applications do not meet: an empty list would mean every application. Lanes and Serves
// (libs/bus) ignore it, so such a bridge serves the ad-hoc lane only.
const noApps = "none"

// asserted is the profile the agent's last enrollment asserted.
func asserted(a Agent) Profile { return Profile{Apps: a.Apps, Capabilities: a.Capabilities} }

// effective is the profile an agent is granted: the intersection of the approved and the
// asserted one. A record approved before approved profiles were kept has none: its asserted
// profile stands until its next re-registration records it as the approved one.
func effective(a Agent) Profile {
	now := asserted(a)
	if a.ApprovedProfile == nil {
		return now
	}
	ok := *a.ApprovedProfile
	var out Profile
	for _, c := range now.Capabilities {
		if slices.Contains(ok.Capabilities, c) && !slices.Contains(out.Capabilities, c) {
			out.Capabilities = append(out.Capabilities, c)
		}
	}
	switch {
	case len(ok.Apps) == 0: // approved for every application
		out.Apps = slices.Clone(now.Apps)
	case len(now.Apps) == 0: // asserts every application: only the approved ones
		out.Apps = slices.Clone(ok.Apps)
	default:
		for _, app := range now.Apps {
			if slices.Contains(ok.Apps, app) {
				out.Apps = append(out.Apps, app)
			}
		}
		if len(out.Apps) == 0 {
			out.Apps = []string{noApps}
		}
	}
	return out
}

// wider reports whether p asks for anything approved does not hold.
func wider(approved, p Profile) bool {
	for _, c := range p.Capabilities {
		if !slices.Contains(approved.Capabilities, c) {
			return true
		}
	}
	if len(approved.Apps) == 0 {
		return false
	}
	if len(p.Apps) == 0 {
		return true // every application, where some were approved
	}
	for _, app := range p.Apps {
		if !slices.Contains(approved.Apps, app) {
			return true
		}
	}
	return false
}

func sameProfile(a, b Profile) bool {
	return slices.Equal(slices.Sorted(slices.Values(a.Apps)), slices.Sorted(slices.Values(b.Apps))) &&
		slices.Equal(slices.Sorted(slices.Values(a.Capabilities)), slices.Sorted(slices.Values(b.Capabilities)))
}

// checkCapabilities refuses capabilities the catalog does not know and too long lists:
// whatever a bridge lists ends up in its grants.
func checkCapabilities(caps []string, pools map[string]int) error {
	if len(caps) > maxCapabilities {
		return fmt.Errorf("%d capabilities listed, at most %d: list only the probe capabilities the bridge offers", len(caps), maxCapabilities)
	}
	if len(pools) > maxCapabilities {
		return fmt.Errorf("%d pools listed, at most %d", len(pools), maxCapabilities)
	}
	known := map[string]bool{}
	for _, s := range catalog.All() {
		known[s.Capability] = true
	}
	var bad []string
	for _, c := range caps {
		if !known[c] {
			bad = append(bad, fmt.Sprintf("%q", c))
		}
	}
	if len(bad) > 0 {
		names := make([]string, 0, len(known))
		for c := range known {
			names = append(names, c)
		}
		slices.Sort(names)
		return fmt.Errorf("capabilities %s: not probe capabilities of this hub (known: %s); upgrade the hub or drop them from the bridge's capabilities",
			strings.Join(bad, ", "), strings.Join(names, ", "))
	}
	return nil
}
