package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// Pending probes are written ahead of their effects. A turn registers probes as pending in
// memory; before they are published, every group of the run that gained a probe (or whose
// probe changed: new deadline, scan chunks applied) is written to KVPending — so at any
// instant a crash can leave, a probe that may be out is on record, and a restarted service
// publishes it again under the same id. The id is the Nats-Msg-Id: while the first copy is in
// the PROBES dedup window the second is dropped, and either way the results of the first
// (late, delivered again to the new incarnation) are accepted since they name a pending id.
//
// Groups that only lost probes (results applied) are written at most every second: a
// crash before that only means a probe published again; its host already records it done
// (Host.Done) or, for a silent address of the sweep, its deadline ends the wait.

// pendingGroup is the value of one group's key.
type pendingGroup struct {
	Fence  uint64                   `json:"fence,omitempty"`
	Probes map[string]*pendingProbe `json:"probes"`
}

func pendingKey(run, group string) string { return run + "." + group }

// pendingSig is what a group's stored copy says of a probe: enough to tell it changed.
type pendingSig struct {
	deadline int64
	chunks   int
	final    int
	unsent   string
	notRun   bool
}

func sigOf(p *pendingProbe) pendingSig {
	return pendingSig{deadline: p.Deadline.UnixNano(), chunks: len(p.Chunks), final: p.Final, unsent: p.Unsent, notRun: p.NotRun != ""}
}

// savePending writes the run's groups that gained or changed a probe since their last
// write, and (all) those that only lost some. Caller holds rs.mu.
func (s *service) savePending(ctx context.Context, rs *runState, all bool) error {
	cur := map[string]map[string]*pendingProbe{}
	for id, p := range rs.run.Pending {
		g := p.group()
		if cur[g] == nil {
			cur[g] = map[string]*pendingProbe{}
		}
		cur[g][id] = p
	}
	if rs.saved == nil {
		rs.saved = map[string]map[string]pendingSig{}
	}
	var errs []error
	for _, g := range slices.Sorted(maps.Keys(cur)) {
		probes, saved := cur[g], rs.saved[g]
		grew := false
		for id, p := range probes {
			if sig, ok := saved[id]; !ok || sig != sigOf(p) {
				grew = true
				break
			}
		}
		if !grew && (len(saved) == len(probes) || !all) {
			continue
		}
		err := rs.pendingW.Put(ctx, pendingKey(rs.run.ID, g), func(token uint64) ([]byte, error) {
			return json.Marshal(pendingGroup{Fence: token, Probes: probes})
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("pending %s: %w", g, err))
			continue
		}
		sigs := make(map[string]pendingSig, len(probes))
		for id, p := range probes {
			sigs[id] = sigOf(p)
		}
		rs.saved[g] = sigs
	}
	if all {
		for _, g := range slices.Sorted(maps.Keys(rs.saved)) {
			if _, ok := cur[g]; ok {
				continue
			}
			if err := rs.pendingW.Delete(ctx, pendingKey(rs.run.ID, g)); err != nil {
				errs = append(errs, fmt.Errorf("pending %s: %w", g, err))
				continue
			}
			delete(rs.saved, g)
		}
	}
	return errors.Join(errs...)
}

// loadPending reads a run's pending groups back (revisions noted for the fenced writer).
func (s *service) loadPending(ctx context.Context, rs *runState) error {
	keys, err := s.kvPending.ListKeysFiltered(ctx, rs.run.ID+".>")
	if err != nil {
		return err
	}
	rs.saved = map[string]map[string]pendingSig{}
	for k := range keys.Keys() {
		e, err := s.kvPending.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		rs.pendingW.Seen(k, e.Revision())
		var pg pendingGroup
		if err := json.Unmarshal(e.Value(), &pg); err != nil {
			return fmt.Errorf("pending %s: %w", k, err)
		}
		g := k[len(rs.run.ID)+1:]
		sigs := map[string]pendingSig{}
		for id, p := range pg.Probes {
			rs.run.Pending[id] = p
			sigs[id] = sigOf(p)
		}
		rs.saved[g] = sigs
	}
	return nil
}

// compactTargets writes consecutive addresses as a-b ranges (what expand reads back): a
// scan chunk's pending copy stays small whatever the chunk size.
func compactTargets(targets []string) []string {
	var out []string
	var lo, hi netip.Addr
	flush := func() {
		switch {
		case !lo.IsValid():
		case lo == hi:
			out = append(out, lo.String())
		default:
			out = append(out, lo.String()+"-"+hi.String())
		}
	}
	for _, t := range targets {
		a, err := netip.ParseAddr(t)
		if err != nil {
			flush()
			lo = netip.Addr{}
			out = append(out, t)
			continue
		}
		if lo.IsValid() && hi.Next() == a {
			hi = a
			continue
		}
		flush()
		lo, hi = a, a
	}
	flush()
	return out
}

// keySafe makes an address one KV key token.
func keySafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '.' || c == ':' {
			b[i] = '_'
		}
	}
	return string(b)
}
