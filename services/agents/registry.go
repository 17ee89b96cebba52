package agents

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Agent states kept in the registry. What operators see (up, down, paused, draining) is
// derived from the approved state and the last heartbeat, never stored.
const (
	StatePending  = "pending"
	StateApproved = "approved"
	StateRevoked  = "revoked"
)

// Site is a network a set of bridges serves.
type Site struct {
	Name    string    `json:"name"`
	Ranges  []string  `json:"ranges"`
	Exclude []string  `json:"exclude,omitempty"`
	Created time.Time `json:"created"`
}

// enrollToken is what is kept of an enrollment token: its hash is the key.
type enrollToken struct {
	Site        string    `json:"site"`
	AutoApprove bool      `json:"auto_approve"`
	Created     time.Time `json:"created"`
}

// Agent is one bridge's registry record.
type Agent struct {
	ID           string         `json:"id"` // its NKey public key
	Name         string         `json:"name"`
	Site         string         `json:"site"`
	State        string         `json:"state"`
	XKey         string         `json:"xkey"`
	Version      string         `json:"version"`
	Capabilities []string       `json:"capabilities"`
	Pools        map[string]int `json:"pools,omitempty"`
	Enrolled     time.Time      `json:"enrolled"`
	Approved     time.Time      `json:"approved,omitzero"`
	Revoked      time.Time      `json:"revoked,omitzero"`
}

func (a Agent) key() string { return a.Site + "." + a.Name }

// Registry keeps sites, enrollment tokens and agents in KV buckets, so every replica of the
// service (and a restarted hub) sees the same.
type Registry struct {
	sites, agents, beats jetstream.KeyValue
}

// OpenRegistry binds the buckets of the topology.
func OpenRegistry(ctx context.Context, js jetstream.JetStream) (*Registry, error) {
	var r Registry
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
func (r *Registry) AddSite(ctx context.Context, name string, ranges, exclude []string, autoApprove bool) (Site, string, error) {
	if !bus.ValidName(name) {
		return Site{}, "", bus.Errorf(400, "site name %q: use 1-64 of a-z, 0-9 and -", name)
	}
	if name == "hub" {
		// event.hub.* carries the hub's own events (audit): no bridge may publish there.
		return Site{}, "", bus.Errorf(400, "site name %q is reserved for the hub's own events; choose another", name)
	}
	rs, err1 := ParseRanges("range", ranges)
	ex, err2 := ParseRanges("exclude", exclude)
	if err := errors.Join(err1, err2); err != nil {
		return Site{}, "", bus.Errorf(400, "%v", err)
	}
	if len(rs) == 0 {
		return Site{}, "", bus.Errorf(400, "site %s needs at least one --range", name)
	}
	site, _, err := getJSON[Site](ctx, r.sites, "site."+name)
	if errors.Is(err, errNotFound) {
		site = Site{Name: name, Created: time.Now().UTC()}
	} else if err != nil {
		return Site{}, "", err
	}
	site.Ranges, site.Exclude = rs, ex
	if err := putJSON(ctx, r.sites, "site."+name, site); err != nil {
		return Site{}, "", err
	}
	tok, err := r.NewToken(ctx, name, autoApprove)
	return site, tok, err
}

// NewToken makes an enrollment token for a site. Only its hash is stored.
func (r *Registry) NewToken(ctx context.Context, site string, autoApprove bool) (string, error) {
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	tok := "ope_" + site + "_" + base64.RawURLEncoding.EncodeToString(buf)
	err := putJSON(ctx, r.sites, "token."+hashToken(tok), enrollToken{Site: site, AutoApprove: autoApprove, Created: time.Now().UTC()})
	return tok, err
}

func hashToken(t string) string {
	s := sha256.Sum256([]byte(t))
	return hex.EncodeToString(s[:])
}

func (r *Registry) token(ctx context.Context, tok string) (enrollToken, error) {
	if tok == "" {
		return enrollToken{}, errNotFound
	}
	t, _, err := getJSON[enrollToken](ctx, r.sites, "token."+hashToken(tok))
	return t, err
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

// AgentByNKey finds an agent by its identity.
func (r *Registry) AgentByNKey(ctx context.Context, nkey string) (Agent, error) {
	e, err := r.agents.Get(ctx, "nkey."+nkey)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Agent{}, errNotFound
		}
		return Agent{}, err
	}
	a, _, err := getJSON[Agent](ctx, r.agents, "agent."+string(e.Value()))
	return a, err
}

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
	slices.SortFunc(out, func(a, b Agent) int { return strings.Compare(a.key(), b.key()) })
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
		_, rev, err := getJSON[Agent](ctx, r.agents, "agent."+found[0].key())
		return found[0], rev, err
	default:
		return Agent{}, 0, bus.Errorf(409, "%d agents are named %q: say SITE/%s", len(found), ref, ref)
	}
}

// Enroll records (or re-reads) an agent for a verified enrollment.
func (r *Registry) Enroll(ctx context.Context, e *envelope.Enrollment, tok enrollToken) (Agent, error) {
	existing, rev, err := getJSON[Agent](ctx, r.agents, "agent."+e.Site+"."+e.Name)
	switch {
	case err == nil && existing.ID == e.NKey:
		// Same identity again (a restart, or a pending bridge polling): refresh its facts.
		existing.Version, existing.Capabilities, existing.XKey, existing.Pools = e.Version, e.Capabilities, e.XKey, e.Pools
		b, err := json.Marshal(existing)
		if err != nil {
			return Agent{}, err
		}
		if _, err := r.agents.Update(ctx, "agent."+existing.key(), b, rev); err != nil {
			return Agent{}, fmt.Errorf("refresh agent %s: %w", existing.key(), err)
		}
		return existing, nil
	case err == nil && existing.State != StateRevoked:
		return Agent{}, bus.Errorf(409, "agent name %s is already enrolled in site %s with another key; revoke it first or choose another --name", e.Name, e.Site)
	case err != nil && !errors.Is(err, errNotFound):
		return Agent{}, err
	}
	if tok.Site == "" {
		return Agent{}, bus.Errorf(403, "enrollment needs a valid site token: create one with `outpost site add %s`", e.Site)
	}
	a := Agent{ID: e.NKey, Name: e.Name, Site: e.Site, State: StatePending, XKey: e.XKey, Version: e.Version,
		Capabilities: e.Capabilities, Pools: e.Pools, Enrolled: time.Now().UTC()}
	if tok.AutoApprove {
		a.State, a.Approved = StateApproved, a.Enrolled
	}
	if err := putJSON(ctx, r.agents, "agent."+a.key(), a); err != nil {
		return Agent{}, err
	}
	if _, err := r.agents.Put(ctx, "nkey."+a.ID, []byte(a.key())); err != nil {
		return Agent{}, err
	}
	return a, nil
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
		now := time.Now().UTC()
		if state == StateApproved {
			a.Approved = now
		} else {
			a.Revoked = now
		}
		b, _ := json.Marshal(a)
		if _, err := r.agents.Update(ctx, "agent."+a.key(), b, rev); err == nil {
			return a, nil
		}
	}
	return Agent{}, bus.Errorf(409, "agent %s changed concurrently; try again", ref)
}

// Beat is the last heartbeat of an agent, as stored.
type Beat struct {
	envelope.Heartbeat
	Received time.Time `json:"received"`
}

// RecordBeat stores a heartbeat; the bucket's TTL forgets it after 3 missed beats.
func (r *Registry) RecordBeat(ctx context.Context, hb *envelope.Heartbeat) error {
	return putJSON(ctx, r.beats, hb.Site+"."+hb.Agent, Beat{Heartbeat: *hb, Received: time.Now().UTC()})
}

// LastBeat returns the agent's last heartbeat within the TTL.
func (r *Registry) LastBeat(ctx context.Context, site, name string) (Beat, bool) {
	b, _, err := getJSON[Beat](ctx, r.beats, site+"."+name)
	return b, err == nil
}
