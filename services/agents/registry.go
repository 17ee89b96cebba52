package agents

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/release"
)

// Agent states kept in the registry. What operators see (up, down, paused, draining) is
// derived from the approved state and the last heartbeat, never stored.
const (
	StatePending  = agentsapi.StatePending
	StateApproved = agentsapi.StateApproved
	StateRevoked  = agentsapi.StateRevoked
)

// Site and Agent are the registry's records, as the contract (libs/api/agents) lists them.
type (
	Site  = agentsapi.Site
	Agent = agentsapi.Agent
)

// Registry keeps sites, enrollment tokens and agents in KV buckets, so every replica of the
// service (and a restarted hub) sees the same.
//
// KV agents holds agent.<site>.<name> (the record), nkey.<key> (which record a key is) and
// revoked.<key>: a revoked key, kept for good so that it never enrolls again, even after
// `agents forget` released its name.
type Registry struct {
	sites, agents, beats jetstream.KeyValue
	now                  func() time.Time
	// ProfileInterval is how often an agent's asserted profile may change (0: any time).
	ProfileInterval time.Duration
}

// EnrollOutcome says what an enrollment did, for the service's log and audit.
type EnrollOutcome int

const (
	// ReRegistered: a known key re-registered with nothing new to tell an operator.
	ReRegistered EnrollOutcome = iota
	// Enrolled: a new agent.
	Enrolled
	// ProfileRequested: an approved agent asserted a profile wider than its approved one,
	// (newly) recorded as requested; it needs `outpost agents approve` again.
	ProfileRequested
	// ProfileChanged: the agent's asserted profile changed within what it is approved for.
	ProfileChanged
)

// OpenRegistry binds the buckets of the topology; now is the clock (nil: time.Now).
func OpenRegistry(ctx context.Context, js jetstream.JetStream, now func() time.Time) (*Registry, error) {
	if now == nil {
		now = time.Now
	}
	r := Registry{now: now}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{bus.KVSites, &r.sites}, {bus.KVAgents, &r.agents}, {bus.KVHeartbeats, &r.beats}} {
		kv, err := js.KeyValue(ctx, b.name)
		if err != nil {
			return nil, fmt.Errorf("kv %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	return &r, nil
}

var errNotFound = errors.New("not found")

func getJSON[T any](ctx context.Context, kv jetstream.KeyValue, key string) (T, uint64, error) {
	var v T
	e, err := kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return v, 0, errNotFound
		}
		return v, 0, err
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("record %s: %w", key, err)
	}
	return v, e.Revision(), nil
}

func putJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, key, b)
	return err
}

// ParseRanges checks CIDRs (IPv4 or IPv6) and returns them normalised.
func ParseRanges(field string, in []string) ([]string, error) {
	var out []string
	var errs []error
	for _, r := range in {
		p, err := netip.ParsePrefix(strings.TrimSpace(r))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: not a CIDR such as 10.1.0.0/16", field, r))
			continue
		}
		out = append(out, p.Masked().String())
	}
	return out, errors.Join(errs...)
}

// AddSite creates (or updates the ranges of) a site and returns a new enrollment token.
func (r *Registry) AddSite(ctx context.Context, name string, ranges, exclude []string, o TokenOptions) (Site, string, TokenView, error) {
	if !bus.ValidName(name) {
		return Site{}, "", TokenView{}, bus.Errorf(400, "site name %q: use 1-64 of a-z, 0-9 and -", name)
	}
	if name == "hub" {
		// event.hub.* carries the hub's own events (audit): no bridge may publish there.
		return Site{}, "", TokenView{}, bus.Errorf(400, "site name %q is reserved for the hub's own events; choose another", name)
	}
	rs, err1 := ParseRanges("range", ranges)
	ex, err2 := ParseRanges("exclude", exclude)
	if err := errors.Join(err1, err2, o.Validate()); err != nil {
		return Site{}, "", TokenView{}, bus.Errorf(400, "%v", err)
	}
	if len(rs) == 0 {
		return Site{}, "", TokenView{}, bus.Errorf(400, "site %s needs at least one --range", name)
	}
	site, _, err := getJSON[Site](ctx, r.sites, "site."+name)
	if errors.Is(err, errNotFound) {
		site = Site{Name: name, Created: r.now().UTC()}
	} else if err != nil {
		return Site{}, "", TokenView{}, err
	}
	site.Ranges, site.Exclude = rs, ex
	if err := putJSON(ctx, r.sites, "site."+name, site); err != nil {
		return Site{}, "", TokenView{}, err
	}
	tok, view, err := r.NewToken(ctx, name, o)
	return site, tok, view, err
}

func hashToken(t string) string {
	s := sha256.Sum256([]byte(t))
	return hex.EncodeToString(s[:])
}

// PinVersion pins the bridge version of a site (an empty version removes the pin). The
// site's bridges learn it at their next re-registration (within 30 s).
func (r *Registry) PinVersion(ctx context.Context, name, version string) (Site, error) {
	if version != "" && !release.ValidVersion(version) {
		return Site{}, bus.Errorf(400, "version %q: want letters, digits and . + ~ _ - (at most 64), such as v1.2.3", version)
	}
	site, _, err := getJSON[Site](ctx, r.sites, "site."+name)
	if errors.Is(err, errNotFound) {
		return Site{}, bus.Errorf(404, "site %s does not exist: `outpost site ls` lists them", name)
	}
	if err != nil {
		return Site{}, err
	}
	site.PinnedVersion = version
	return site, putJSON(ctx, r.sites, "site."+name, site)
}

// Site returns one site.
func (r *Registry) Site(ctx context.Context, name string) (Site, error) {
	s, _, err := getJSON[Site](ctx, r.sites, "site."+name)
	return s, err
}

// Sites lists every site.
func (r *Registry) Sites(ctx context.Context) ([]Site, error) {
	keys, err := r.sites.ListKeys(ctx, jetstream.MetaOnly())
	if err != nil {
		return nil, err
	}
	var out []Site
	for k := range keys.Keys() {
		if !strings.HasPrefix(k, "site.") {
			continue
		}
		if s, err := r.Site(ctx, strings.TrimPrefix(k, "site.")); err == nil {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Site) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// AgentByNKey finds an agent by its identity. A revoked key is found as a revoked agent
// even once its record is gone (`agents forget`), and so is a key whose name another key now
// holds: a key is only ever its own record's.
func (r *Registry) AgentByNKey(ctx context.Context, nkey string) (Agent, error) {
	e, err := r.agents.Get(ctx, "nkey."+nkey)
	switch {
	case err == nil:
		a, _, err := getJSON[Agent](ctx, r.agents, "agent."+string(e.Value()))
		if err == nil && a.ID == nkey {
			return a, nil
		}
		if err != nil && !errors.Is(err, errNotFound) {
			return Agent{}, err
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return Agent{}, err
	}
	gone, _, gerr := getJSON[Agent](ctx, r.agents, revokedKey(nkey))
	switch {
	case gerr == nil:
		gone.State = StateRevoked
		return gone, nil
	case !errors.Is(gerr, errNotFound):
		return Agent{}, gerr
	case err == nil:
		// The key pointed at a name that another key holds now (written before names were
		// kept for revoked agents): the key lost its name, so it is refused.
		site, name, _ := strings.Cut(string(e.Value()), ".")
		return Agent{ID: nkey, Site: site, Name: name, State: StateRevoked}, nil
	}
	return Agent{}, errNotFound
}

func revokedKey(nkey string) string { return "revoked." + nkey }

// Agents lists every agent record.
func (r *Registry) Agents(ctx context.Context) ([]Agent, error) {
	keys, err := r.agents.ListKeys(ctx, jetstream.MetaOnly())
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, err
	}
	var out []Agent
	for k := range keys.Keys() {
		if !strings.HasPrefix(k, "agent.") {
			continue
		}
		if a, _, err := getJSON[Agent](ctx, r.agents, k); err == nil {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b Agent) int { return strings.Compare(a.Key(), b.Key()) })
	return out, nil
}

// FindAgent resolves NAME or SITE/NAME to one agent.
func (r *Registry) FindAgent(ctx context.Context, ref string) (Agent, uint64, error) {
	if site, name, ok := strings.Cut(ref, "/"); ok {
		a, rev, err := getJSON[Agent](ctx, r.agents, "agent."+site+"."+name)
		if errors.Is(err, errNotFound) {
			return a, 0, bus.Errorf(404, "no agent %s in site %s", name, site)
		}
		return a, rev, err
	}
	all, err := r.Agents(ctx)
	if err != nil {
		return Agent{}, 0, err
	}
	var found []Agent
	for _, a := range all {
		if a.Name == ref {
			found = append(found, a)
		}
	}
	switch len(found) {
	case 0:
		return Agent{}, 0, bus.Errorf(404, "no agent named %q; `outpost agents ls` lists them", ref)
	case 1:
		_, rev, err := getJSON[Agent](ctx, r.agents, "agent."+found[0].Key())
		return found[0], rev, err
	default:
		return Agent{}, 0, bus.Errorf(409, "%d agents are named %q: say SITE/%s", len(found), ref, ref)
	}
}

// Enroll records a verified enrollment. A key already enrolled under this name
// re-registers (its facts are refreshed; isNew is false) whatever its token says: bridges
// re-enroll every 30 s and tokens expire. Anything else is a new enrollment and needs a
// usable token of the site, one use of which it spends. A revoked key never enrolls again,
// and a revoked agent's name stays taken until an admin forgets it.
func (r *Registry) Enroll(ctx context.Context, e *envelope.Enrollment) (a Agent, outcome EnrollOutcome, err error) {
	known, err := r.AgentByNKey(ctx, e.NKey)
	switch {
	case err == nil && known.State == StateRevoked:
		// Only the key's holder (the signature verified) learns its own record's state.
		return Agent{}, ReRegistered, bus.Errorf(403, "this key was revoked (agent %s/%s) and never enrolls again: give the bridge a new data dir (a new key); an admin may first need to free the name with `outpost agents forget %s/%s`",
			known.Site, known.Name, known.Site, known.Name)
	case err == nil && (known.Site != e.Site || known.Name != e.Name):
		return Agent{}, ReRegistered, bus.Errorf(409, "this key is already enrolled as %s/%s: run the bridge with --site %s --name %s, or give it a new data dir to enroll another agent",
			known.Site, known.Name, known.Site, known.Name)
	case err == nil:
		return r.refresh(ctx, known.Key(), e)
	case !errors.Is(err, errNotFound):
		return Agent{}, ReRegistered, err
	}
	// A new key: the token is checked against the site before anything else, so that
	// without one nobody learns whether a site exists or which names its agents have.
	// Its holder may learn why its own token of the site no longer enrolls (expired, used up,
	// revoked): that tells nothing about other sites or names.
	switch t, _, err := r.lookupToken(ctx, e.Token); {
	case errors.Is(err, errNotFound) || (err == nil && t.Site != e.Site):
		return Agent{}, ReRegistered, errEnrollRefused(e.Site)
	case err != nil:
		return Agent{}, ReRegistered, err
	default:
		if err := usable(t, r.now()); err != nil {
			return Agent{}, ReRegistered, err
		}
	}
	existing, _, err := getJSON[Agent](ctx, r.agents, "agent."+e.Site+"."+e.Name)
	switch {
	case err == nil && existing.State == StateRevoked:
		return Agent{}, ReRegistered, bus.Errorf(403, "agent %s/%s was revoked; its name is kept so that no other key takes it silently: if this bridge is meant to replace it, an admin runs `outpost agents forget %s/%s` first",
			e.Site, e.Name, e.Site, e.Name)
	case err == nil:
		return Agent{}, ReRegistered, bus.Errorf(409, "agent name %s is already enrolled in site %s with another key; revoke it first or choose another --name", e.Name, e.Site)
	case !errors.Is(err, errNotFound):
		return Agent{}, ReRegistered, err
	}
	tok, err := r.useToken(ctx, e.Token, e.Site)
	if err != nil {
		return Agent{}, ReRegistered, err
	}
	now := r.now().UTC()
	a = Agent{ID: e.NKey, Name: e.Name, Site: e.Site, State: StatePending, XKey: e.XKey, Version: e.Version,
		Capabilities: e.Capabilities, Apps: e.Apps, Pools: e.Pools, Enrolled: now}
	if tok.AutoApprove {
		// The token's holder was trusted with what the bridge asserts now, nothing more.
		p := asserted(a)
		a.State, a.Approved, a.ApprovedProfile = StateApproved, now, &p
	}
	b, err := json.Marshal(a)
	if err != nil {
		return Agent{}, ReRegistered, err
	}
	// Create, not Put: of two keys racing for one name, one wins and the other is told.
	if _, err := r.agents.Create(ctx, "agent."+a.Key(), b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Agent{}, ReRegistered, bus.Errorf(409, "agent name %s was enrolled in site %s by another key just now; choose another --name", e.Name, e.Site)
		}
		return Agent{}, ReRegistered, err
	}
	if _, err := r.agents.Put(ctx, "nkey."+a.ID, []byte(a.Key())); err != nil {
		return Agent{}, ReRegistered, err
	}
	return a, Enrolled, nil
}

// errEnrollRefused is the one answer to a new key without a usable token of the site,
// whether the site exists or not, whatever its agents are named.
func errEnrollRefused(site string) error {
	return bus.Errorf(403, "enrollment refused: no usable enrollment token of site %s (unknown, expired, used up, revoked or made for another site); an admin makes one with `outpost site tokens add %s`", site, site)
}

// refresh updates what a known agent reports about itself (a restart, a pending bridge
// polling, the periodic re-registration). What it asserts is recorded, but its rights
// follow its approved profile (effective): a wider assertion is recorded as requested.
// A change of the asserted profile applies at most once per ProfileInterval: each one
// regroups the site's consumers and kicks bridges, so one bridge must not churn its site.
func (r *Registry) refresh(ctx context.Context, key string, e *envelope.Enrollment) (Agent, EnrollOutcome, error) {
	for range 5 {
		a, rev, err := getJSON[Agent](ctx, r.agents, "agent."+key)
		if err != nil {
			return Agent{}, ReRegistered, err
		}
		now := r.now().UTC()
		if a.State == StateApproved && a.ApprovedProfile == nil {
			// Approved before approved profiles were kept: what it had is what it was approved for.
			p := asserted(a)
			a.ApprovedProfile = &p
		}
		want := Profile{Apps: e.Apps, Capabilities: e.Capabilities}
		outcome := ReRegistered
		if !sameProfile(asserted(a), want) {
			if !a.ProfileChanged.IsZero() && r.ProfileInterval > 0 && now.Sub(a.ProfileChanged) < r.ProfileInterval {
				a.ProfileRefused++
				if b, err := json.Marshal(a); err == nil {
					_, _ = r.agents.Update(ctx, "agent."+key, b, rev) // the count is best effort
				}
				next := a.ProfileChanged.Add(r.ProfileInterval)
				return a, ReRegistered, bus.Errorf(http.StatusTooManyRequests,
					"agent %s changed its profile (apps, capabilities) at %s: changes apply at most once every %s, next from %s; until then run the bridge with its previous --apps and capabilities",
					key, a.ProfileChanged.Format(time.RFC3339), r.ProfileInterval, next.Format(time.RFC3339))
			}
			a.ProfileChanged = now
			outcome = ProfileChanged
		}
		a.Version, a.Capabilities, a.XKey, a.Pools, a.Apps = e.Version, e.Capabilities, e.XKey, e.Pools, e.Apps
		wasRequested := a.Requested
		a.Requested = nil
		if a.ApprovedProfile != nil && wider(*a.ApprovedProfile, want) {
			a.Requested = &want
			if wasRequested == nil || !sameProfile(*wasRequested, want) {
				outcome = ProfileRequested
			}
		}
		b, err := json.Marshal(a)
		if err != nil {
			return Agent{}, ReRegistered, err
		}
		if _, err := r.agents.Update(ctx, "agent."+key, b, rev); err == nil {
			return a, outcome, nil
		}
	}
	return Agent{}, ReRegistered, fmt.Errorf("refresh agent %s: changed concurrently", key)
}

// SetState moves an agent to approved or revoked (compare-and-set on its revision).
func (r *Registry) SetState(ctx context.Context, ref, state string) (Agent, error) {
	for range 5 {
		a, rev, err := r.FindAgent(ctx, ref)
		if err != nil {
			return Agent{}, err
		}
		if a.State == StateRevoked && state == StateApproved {
			return Agent{}, bus.Errorf(409, "agent %s was revoked: a revoked identity never comes back; re-enroll the bridge with a new data dir", a.Name)
		}
		a.State = state
		now := r.now().UTC()
		if state == StateApproved {
			// Approving approves what the bridge asserts now, a pending request included.
			p := asserted(a)
			a.Approved, a.ApprovedProfile, a.Requested = now, &p, nil
		} else {
			a.Revoked = now
		}
		b, _ := json.Marshal(a)
		if _, err := r.agents.Update(ctx, "agent."+a.Key(), b, rev); err == nil {
			if state == StateRevoked {
				// The key stays revoked even if the record goes (agents forget).
				if _, err := r.agents.Put(ctx, revokedKey(a.ID), b); err != nil {
					return Agent{}, fmt.Errorf("agent %s revoked, but its key was not recorded as revoked: %w", a.Key(), err)
				}
			}
			return a, nil
		}
	}
	return Agent{}, bus.Errorf(409, "agent %s changed concurrently; try again", ref)
}

// Forget removes a revoked agent's record so that its name may enroll again (with a new
// key and a valid token). Its key stays revoked for good.
func (r *Registry) Forget(ctx context.Context, ref string) (Agent, error) {
	a, rev, err := r.FindAgent(ctx, ref)
	if err != nil {
		return Agent{}, err
	}
	if a.State != StateRevoked {
		return Agent{}, bus.Errorf(409, "agent %s/%s is %s: only a revoked agent is forgotten; `outpost agents revoke %s/%s` first", a.Site, a.Name, a.State, a.Site, a.Name)
	}
	b, _ := json.Marshal(a)
	if _, err := r.agents.Put(ctx, revokedKey(a.ID), b); err != nil {
		return Agent{}, err
	}
	if err := r.agents.Delete(ctx, "agent."+a.Key(), jetstream.LastRevision(rev)); err != nil {
		return Agent{}, bus.Errorf(409, "agent %s changed concurrently; try again (%v)", a.Key(), err)
	}
	if e, err := r.agents.Get(ctx, "nkey."+a.ID); err == nil && string(e.Value()) == a.Key() {
		_ = r.agents.Delete(ctx, "nkey."+a.ID, jetstream.LastRevision(e.Revision()))
	}
	return a, nil
}

// SiteBridges builds the site's bus.SiteBridges record from the registry: its approved
// agents, the applications and capabilities each serves. Only the site's own keys are read:
// enrolling the hundredth site must not read the other ninety-nine's agents.
func (r *Registry) SiteBridges(ctx context.Context, site string) (bus.SiteBridges, error) {
	sb := bus.SiteBridges{Site: site, Bridges: map[string][]string{}, Capabilities: map[string][]string{}}
	keys, err := r.agents.ListKeysFiltered(ctx, "agent."+site+".*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return sb, nil
		}
		return sb, err
	}
	for k := range keys.Keys() {
		a, _, err := getJSON[Agent](ctx, r.agents, k)
		if errors.Is(err, errNotFound) {
			continue // forgotten meanwhile
		}
		if err != nil {
			return sb, err
		}
		if a.Site == site && a.State == StateApproved {
			p := effective(a)
			sb.Bridges[a.Name] = p.Apps
			sb.Capabilities[a.Name] = p.Capabilities
		}
	}
	return sb, nil
}

// StoredSiteBridges is the site's record as last written (found false: none yet) and its
// revision (0: none).
func (r *Registry) StoredSiteBridges(ctx context.Context, site string) (bus.SiteBridges, uint64, bool, error) {
	sb, rev, err := getJSON[bus.SiteBridges](ctx, r.sites, bus.SiteBridgesKey(site))
	if errors.Is(err, errNotFound) {
		return bus.SiteBridges{}, 0, false, nil
	}
	return sb, rev, err == nil, err
}

// errRecordChanged: the record was written by someone else since it was read.
var errRecordChanged = errors.New("changed since read")

// WriteSiteBridges stores the site's record if it is still at revision rev (0: absent):
// probe publishers read it (bus.PublishProbe). A replica that lost the race gets
// errRecordChanged and must read again, as the consumers it declared may be stale.
func (r *Registry) WriteSiteBridges(ctx context.Context, sb bus.SiteBridges, rev uint64) error {
	b, err := json.Marshal(sb)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = r.sites.Create(ctx, bus.SiteBridgesKey(sb.Site), b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return errRecordChanged
		}
		return err
	}
	_, err = r.sites.Update(ctx, bus.SiteBridgesKey(sb.Site), b, rev)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return errRecordChanged
	}
	return err
}

// Beat is the last heartbeat of an agent, as stored.
type Beat struct {
	envelope.Heartbeat
	Received time.Time `json:"received"`
}

// RecordBeat stores a heartbeat; the bucket's TTL forgets it after 3 missed beats.
func (r *Registry) RecordBeat(ctx context.Context, hb *envelope.Heartbeat) error {
	return putJSON(ctx, r.beats, hb.Site+"."+hb.Agent, Beat{Heartbeat: *hb, Received: r.now().UTC()})
}

// LastBeat returns the agent's last heartbeat within the TTL.
func (r *Registry) LastBeat(ctx context.Context, site, name string) (Beat, bool) {
	b, _, err := getJSON[Beat](ctx, r.beats, site+"."+name)
	return b, err == nil
}
