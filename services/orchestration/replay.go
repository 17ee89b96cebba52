package orchestration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Replay (outpost replay --stream CHANGES --to orchestration) reads the CMDB change events
// the CHANGES stream kept with a fresh ordered consumer and hands each to the cmdb_change
// triggers, as the live consumer does: the same matching (latest definitions, changes from
// before a version was added ignored) and the same run ids, derived from each change event's
// id. A run a change started already — live, or by an earlier replay — is found and left, so
// replaying a range twice starts each of its runs once. It is how runs lost with the
// orchestration's state, or changes the live consumer gave up on, are started after all.

// replay serves api.Replay; the runs it starts belong to ctx, the service's.
func (s *service) replay(rctx, ctx context.Context, wg *sync.WaitGroup, req api.ReplayRequest) (api.ReplayReply, error) {
	var errs []error
	if req.Stream != "" && !strings.EqualFold(req.Stream, bus.StreamChanges) {
		errs = append(errs, fmt.Errorf("stream %q: orchestration replays %s (CMDB change events, for cmdb_change triggers)", req.Stream, bus.StreamChanges))
	}
	now := s.now()
	since, err := replayTime("since", req.Since, now)
	if err != nil {
		errs = append(errs, err)
	}
	until, err := replayTime("until", req.Until, now)
	if err != nil {
		errs = append(errs, err)
	}
	if req.Since != "" && req.FromSeq > 0 {
		errs = append(errs, errors.New("since and from_seq: give one of them"))
	}
	if req.ToSeq > 0 && req.FromSeq > req.ToSeq {
		errs = append(errs, fmt.Errorf("from_seq %d is after to_seq %d", req.FromSeq, req.ToSeq))
	}
	if !since.IsZero() && !until.IsZero() && !until.After(since) {
		errs = append(errs, fmt.Errorf("until %s is not after since %s", req.Until, req.Since))
	}
	filter := "cmdb.changed.>"
	if req.Class != "" {
		if !bus.ValidName(strings.ReplaceAll(req.Class, "_", "-")) {
			errs = append(errs, fmt.Errorf("class %q: want a CI class, e.g. linux_server", req.Class))
		} else {
			filter = bus.ChangeSubject(req.Class)
		}
	}
	if req.Limit < 0 {
		errs = append(errs, fmt.Errorf("limit %d: want 1 to %d (0: %d)", req.Limit, api.ReplayLimit, api.ReplayLimit))
	}
	if len(errs) > 0 {
		return api.ReplayReply{}, bus.Errorf(400, "%v", errors.Join(errs...))
	}
	limit := req.Limit
	if limit == 0 || limit > api.ReplayLimit {
		limit = api.ReplayLimit
	}
	out := api.ReplayReply{DryRun: req.DryRun}
	var failed []error
	err = readChanges(rctx, s.deps.JS, filter, req.FromSeq, since, func(msg jetstream.Msg, seq uint64, stored time.Time) (bool, error) {
		if (req.ToSeq > 0 && seq > req.ToSeq) || (!until.IsZero() && !stored.Before(until)) {
			return false, nil
		}
		if out.Changes == limit {
			out.Next = seq
			return false, nil
		}
		out.Changes++
		if out.FirstSeq == 0 {
			out.FirstSeq = seq
		}
		out.LastSeq = seq
		meta, c, err := envelope.DecodeInto[*envelope.Change](msg.Headers(), msg.Data())
		if err != nil {
			// the live consumer dead-letters it; a replay says so and goes on
			out.Refused++
			out.Firings = append(out.Firings, api.ReplayFiring{Seq: seq, Outcome: "refused", Reason: "not a change event: " + err.Error()})
			return true, nil
		}
		for _, f := range s.changeFirings(rctx, meta, c) {
			out.Matched++
			fr := api.ReplayFiring{Seq: seq, Change: meta.ID, Workflow: f.d.Name, Version: f.d.Version, Run: f.id}
			switch {
			case req.DryRun:
				if _, err := s.getRun(rctx, f.id); err == nil {
					fr.Outcome = "existed"
					out.Existed++
				} else {
					fr.Outcome = "would_start"
					out.Started++
				}
			default:
				_, err := s.startRunAs(rctx, ctx, wg, f.req, f.id, nil, f.trg)
				var se *bus.ServiceError
				switch {
				case err == nil:
					fr.Outcome = "started"
					out.Started++
				case errors.Is(err, errStartedAlready):
					fr.Outcome = "existed"
					out.Existed++
				case errors.As(err, &se) && se.Code < 500:
					fr.Outcome, fr.Reason = "refused", err.Error()
					out.Refused++
				default:
					// stop here: the reply's counts say what was done, a new replay from
					// this sequence does the rest (started runs are found, not doubled)
					failed = append(failed, fmt.Errorf("change %s (seq %d) → %s: %w", meta.ID, seq, f.d.Name, err))
					return false, nil
				}
			}
			out.Firings = append(out.Firings, fr)
		}
		return true, nil
	})
	if err == nil && len(failed) > 0 {
		err = fmt.Errorf("%w; replay again from from_seq %d", errors.Join(failed...), out.LastSeq)
	}
	if err != nil {
		return out, fmt.Errorf("replay %s after %d change events, %d runs started: %w", bus.StreamChanges, out.Changes, out.Started, err)
	}
	return out, nil
}

// replayTime reads since/until: a duration before now (10m) or an RFC 3339 time.
func replayTime(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want a duration before now such as 10m, or an RFC 3339 time", name, v)
}

// readChanges reads the stored messages of CHANGES matching filter (from fromSeq or since,
// else from the start) until it has caught up or f says stop.
func readChanges(ctx context.Context, js jetstream.JetStream, filter string, fromSeq uint64, since time.Time, f func(msg jetstream.Msg, seq uint64, stored time.Time) (bool, error)) error {
	return bus.ReadRange(ctx, js, bus.StreamRange{Stream: bus.StreamChanges, Filter: filter, FromSeq: fromSeq, Since: since}, f)
}
