package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
)

// Retention keeps what discovery stores bounded by time, not by the number of runs ever made.
// Every PruneEvery the active replica:
//
//   - deletes the pending groups (discovery_pending) of every finished or cancelled run — a
//     run that ends writes them away itself, but a crash at its end, or a cancel of a run no
//     replica had in memory, can leave some;
//   - deletes every run that ended more than Retention ago (default 30 days, as MID users
//     expect of discovery status records): its hosts (discovery_hosts), then its record
//     (runs) last, so a crash in between leaves a record the next pass finds again.
//
// Keys go by a purge of their subjects in the bucket's stream — all hosts of a run in one
// call, and no delete marker left behind per key (a KV delete keeps one for good).
// Runs still active are never touched, nor keys of the runs bucket that are not discovery's.

// PruneStats counts what one pass deleted.
type PruneStats struct {
	Runs, Hosts, Pending int
}

// pruneLoop prunes at once and then every PruneEvery, until ctx ends.
func (s *service) pruneLoop(ctx context.Context) {
	t := s.clock.NewTicker(s.cfg.PruneEvery)
	defer t.Stop()
	for {
		if st, err := s.prune(ctx); err != nil {
			s.log.Warn("retention: prune pass incomplete; tried again at the next", "err", err, "runs", st.Runs, "hosts", st.Hosts, "pending", st.Pending)
		} else if st != (PruneStats{}) {
			s.log.Info("retention: pruned", "runs", st.Runs, "hosts", st.Hosts, "pending_groups", st.Pending, "retention", s.cfg.Retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// prune is one pass (see Retention).
func (s *service) prune(ctx context.Context) (PruneStats, error) {
	var st PruneStats
	if err := s.fence(); err != nil {
		return st, nil // not the active replica (any more): its successor prunes
	}
	keys, err := s.kvRuns.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	var ids []string
	for k := range keys.Keys() {
		ids = append(ids, k)
	}
	cutoff := s.now().Add(-s.cfg.Retention)
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		e, err := s.kvRuns.Get(ctx, id)
		if err != nil {
			if !errors.Is(err, jetstream.ErrKeyNotFound) {
				errs = append(errs, fmt.Errorf("run %s: %w", id, err))
			}
			continue
		}
		var r RunRecord
		if json.Unmarshal(e.Value(), &r) != nil || r.Site == "" || !terminalState(r.State) {
			continue // another service's key, or a run still going
		}
		s.mu.Lock()
		_, live := s.runs[id]
		s.mu.Unlock()
		if live {
			continue // ending right now: it removes its own pending groups
		}
		n, err := s.purgeKeys(ctx, KVPending, id+".>")
		st.Pending += n
		if err != nil {
			errs = append(errs, fmt.Errorf("run %s: pending groups: %w", id, err))
			continue
		}
		ended := r.Updated
		if r.Finished != nil {
			ended = *r.Finished
		}
		if !ended.Before(cutoff) {
			continue
		}
		if err := s.fence(); err != nil {
			break // lost the lease meanwhile
		}
		n, err = s.purgeKeys(ctx, KVHosts, hostKeyPrefix(id)+">")
		st.Hosts += n
		if err != nil {
			errs = append(errs, fmt.Errorf("run %s: hosts: %w", id, err))
			continue
		}
		// the record last (an ended run is never written again)
		if _, err := s.purgeKeys(ctx, bus.KVRuns, id); err != nil {
			errs = append(errs, fmt.Errorf("run %s: record: %w", id, err))
			continue
		}
		st.Runs++
	}
	return st, errors.Join(errs...)
}

// purgeKeys removes every message of the keys matching pattern (a key, or "<prefix>.>")
// from a bucket's stream: the keys are gone, no delete marker left. It returns how many
// messages went.
func (s *service) purgeKeys(ctx context.Context, bucket, pattern string) (int, error) {
	str, err := s.deps.JS.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return 0, err
	}
	subject := "$KV." + bucket + "." + pattern
	info, err := str.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	if n == 0 {
		return 0, nil
	}
	if err := str.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return 0, err
	}
	return n, nil
}
