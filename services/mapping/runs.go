package mapping

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// A mapping in progress is a run record in KV (KVRuns, one per service), not only a
// goroutine: the replica mapping it beats its heartbeat into the record and deletes it when
// the map is stored. A hub that dies mid-map leaves the record behind, and the run is
// mapped again — by the same replica as soon as it restarts (the record names it), or by the
// scheduler's replica once the heartbeat is older than RunStale. A mapping is idempotent
// (the IRE reconciles the same map to the same CIs), so restarting it from the entry is
// the resume; Attempts bounds how often a run that keeps killing its replica is retried.

// KVRuns holds the mapping runs in progress.
const KVRuns = "mapping_runs"

// runRecord is one mapping in progress.
type runRecord struct {
	ID        string    `json:"id"`
	Service   string    `json:"service"`
	Reason    string    `json:"reason"` // by_hand, first_map, schedule
	Requested time.Time `json:"requested"`
	// Owner is the replica mapping it; Heartbeat its last sign of life.
	Owner     string    `json:"owner"`
	Heartbeat time.Time `json:"heartbeat"`
	// Attempts counts the mappings started for this run (resumes included).
	Attempts int `json:"attempts"`
}

// Why a run was started.
const (
	reasonByHand   = "by_hand"
	reasonFirstMap = "first_map"
	reasonSchedule = "schedule"
)

// errMappedElsewhere: another live replica maps the service.
var errMappedElsewhere = errors.New("another replica maps this service")

func (s *service) getRun(ctx context.Context, name string) (*runRecord, uint64, error) {
	e, err := s.kvRuns.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var r runRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		// a record nobody can read would block the service forever: replace it
		s.log.Warn("unreadable mapping run record: replaced", "service", name, "err", err)
		return &runRecord{Service: name, Reason: reasonByHand}, e.Revision(), nil
	}
	return &r, e.Revision(), nil
}

func (s *service) stale(r *runRecord) bool {
	return s.now().Sub(r.Heartbeat) > s.cfg.RunStale
}

// claimRun makes this replica the owner of the service's run: a new record, or one left by
// this replica's previous life, or one whose owner stopped beating. It returns
// errMappedElsewhere when a live replica owns it, and errGaveUp (with the service marked
// failed) when the run was already started MaxAttempts times.
func (s *service) claimRun(ctx context.Context, name, reason string) (runRecord, uint64, error) {
	for {
		r, rev, err := s.getRun(ctx, name)
		if err != nil {
			return runRecord{}, 0, fmt.Errorf("mapping run of %s: %w", name, err)
		}
		now := s.now()
		if r == nil {
			nr := runRecord{ID: envelope.NewID(), Service: name, Reason: reason, Requested: now, Owner: s.cfg.Replica, Heartbeat: now, Attempts: 1}
			b, _ := json.Marshal(nr)
			rev, err := s.kvRuns.Create(ctx, name, b)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // another replica was quicker: look again
			}
			return nr, rev, err
		}
		if r.Owner != s.cfg.Replica && !s.stale(r) {
			return runRecord{}, 0, errMappedElsewhere
		}
		if r.Attempts >= s.cfg.MaxAttempts {
			err := fmt.Errorf("mapping run %s was interrupted %d times (its replica stopped or restarted mid-map each time); not retried: see the hub's log, then `outpost services remap %s`", r.ID, r.Attempts, name)
			if a, gerr := s.get(ctx, name); gerr == nil {
				a.State, a.Error = api.ServiceFailed, err.Error()
				_ = s.put(ctx, a)
			}
			_ = s.kvRuns.Delete(ctx, name, jetstream.LastRevision(rev))
			return runRecord{}, 0, err
		}
		s.log.Info("mapping run resumed", "service", name, "run", r.ID, "previous_owner", r.Owner, "attempt", r.Attempts+1)
		r.Owner, r.Heartbeat, r.Attempts = s.cfg.Replica, now, r.Attempts+1
		b, _ := json.Marshal(r)
		nrev, err := s.kvRuns.Update(ctx, name, b, rev)
		if err != nil && isWrongRevision(err) {
			continue
		}
		return *r, nrev, err
	}
}

func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// beat keeps the run's heartbeat fresh until ctx ends; it cancels the mapping when the
// record was taken over (this replica was presumed dead: the new owner maps it).
func (s *service) beat(ctx context.Context, cancel context.CancelFunc, r runRecord, rev uint64) {
	t := s.clock.NewTicker(s.cfg.RunHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		r.Heartbeat = s.now()
		b, _ := json.Marshal(r)
		nrev, err := s.kvRuns.Update(ctx, r.Service, b, rev)
		switch {
		case err == nil:
			rev = nrev
		case isWrongRevision(err) || errors.Is(err, jetstream.ErrKeyNotFound):
			s.log.Warn("mapping run taken over by another replica: stopping here", "service", r.Service, "run", r.ID)
			cancel()
			return
		default:
			s.log.Warn("mapping run heartbeat", "service", r.Service, "err", err)
		}
	}
}

// endRun deletes the run record if it is still this replica's.
func (s *service) endRun(ctx context.Context, name string) {
	r, rev, err := s.getRun(ctx, name)
	if err != nil || r == nil || r.Owner != s.cfg.Replica {
		return
	}
	if err := s.kvRuns.Delete(ctx, name, jetstream.LastRevision(rev)); err != nil {
		s.log.Warn("mapping run record not deleted", "service", name, "err", err)
	}
}

// resumeRuns starts the runs left behind: this replica's own (it just started: none of
// them runs) and, when stale is set, every run whose owner stopped beating.
func (s *service) resumeRuns(ctx context.Context, stale bool) {
	lister, err := s.kvRuns.ListKeys(ctx)
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) {
			s.log.Warn("mapping runs: list", "err", err)
		}
		return
	}
	var names []string
	for k := range lister.Keys() {
		names = append(names, k)
	}
	for _, name := range names {
		if s.inProgress(name) != nil {
			continue
		}
		r, _, err := s.getRun(ctx, name)
		if err != nil || r == nil {
			continue
		}
		if r.Owner == s.cfg.Replica || stale && s.stale(r) {
			s.startMapping(name, r.Reason)
		}
	}
}
