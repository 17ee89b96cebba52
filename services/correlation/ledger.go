package correlation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
)

// The applied ledger: an alert keeps the EVENTS sequences it took in AppliedEvents, which
// the live path needs only above the events consumer's acknowledgement floor (below it the
// router routes nothing again). A replay (replay.go) routes old events again on purpose, so
// it must know every sequence a key took for as long as EVENTS keeps the events. Keeping
// them all in the alert would make a busy key's document grow with every event of other
// keys between its own (one range each); so the alert keeps what is above the floor plus
// its newest ledgerKeep ranges below it, and moves older ones, ledgerSpill at a time, to
// the slot's subject of the CORR_APPLIED stream — one publish per ledgerSpill ranges, not
// per event. The stream keeps them as long as EVENTS keeps events (a range is stored after
// its events, so it outlives them). A replay reads a slot's ledger only for slots it routes.
const (
	// StreamApplied holds the applied sequences alerts moved out of their documents.
	StreamApplied  = "CORR_APPLIED"
	appliedSubject = "corr.applied."
	// ledgerKeep ranges below the floor stay in the alert; at ledgerKeep+ledgerSpill the
	// oldest ledgerSpill move to the ledger.
	ledgerKeep  = 32
	ledgerSpill = 128
)

func appliedSubjectOf(slot string) string { return appliedSubject + slot }

// ensureLedger creates the ledger stream, its age that of EVENTS (0: kept as long as
// EVENTS keeps anything; a range older than the oldest event answers nothing).
func ensureLedger(ctx context.Context, js jetstream.JetStream) error {
	cfg := bus.Stream(StreamApplied) // the stores table (libs/bus/stores.go)
	if st, err := js.Stream(ctx, bus.StreamEvents); err == nil {
		// the hub's EVENTS may be tuned (bus.Limits): the ledger keeps ranges as long
		cfg.MaxAge = st.CachedInfo().Config.MaxAge
	}
	_, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return fmt.Errorf("correlation: stream %s: %w", StreamApplied, err)
	}
	return nil
}

// trimApplied is what an alert write keeps of rs: every range above floor and the newest
// ledgerKeep below it; spill is what moves to the ledger (nil until ledgerKeep+ledgerSpill
// ranges are below the floor).
func trimApplied(rs []api.SeqRange, floor uint64) (keep, spill []api.SeqRange) {
	below := 0
	for below < len(rs) && rs[below].To <= floor {
		below++
	}
	if below < ledgerKeep+ledgerSpill {
		return rs, nil
	}
	cut := below - ledgerKeep
	return slices.Clone(rs[cut:]), slices.Clone(rs[:cut])
}

// spill stores ranges in the slot's ledger; the alert may drop them only once this returned
// nil (a crash in between leaves them in both: a union, harmless).
func (s *service) spill(ctx context.Context, slot string, rs []api.SeqRange) error {
	b, _ := json.Marshal(rs)
	if _, err := s.deps.JS.Publish(ctx, appliedSubjectOf(slot), b); err != nil {
		return fmt.Errorf("applied ledger of slot %s: %w", slot, err)
	}
	return nil
}

// ledger reads every range the slot's alerts moved to the ledger, merged.
func (s *service) ledger(ctx context.Context, slot string) ([]api.SeqRange, error) {
	st, err := s.deps.JS.Stream(ctx, StreamApplied)
	if err != nil {
		return nil, fmt.Errorf("applied ledger: %w", err)
	}
	var out []api.SeqRange
	subj := appliedSubjectOf(slot)
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return mergeRanges(out), nil
		}
		if err != nil {
			return nil, fmt.Errorf("applied ledger of slot %s: %w", slot, err)
		}
		var rs []api.SeqRange
		if err := json.Unmarshal(m.Data, &rs); err != nil {
			return nil, fmt.Errorf("applied ledger of slot %s, message %d: %w", slot, m.Sequence, err)
		}
		out = append(out, rs...)
		seq = m.Sequence + 1
	}
}

// mergeRanges sorts and merges ranges into sorted, disjoint ones (neighbours joined).
func mergeRanges(rs []api.SeqRange) []api.SeqRange {
	slices.SortFunc(rs, func(a, b api.SeqRange) int { return cmp.Compare(a.From, b.From) })
	var out []api.SeqRange
	for _, r := range rs {
		if n := len(out); n > 0 && r.From <= out[n-1].To+1 {
			out[n-1].To = max(out[n-1].To, r.To)
			continue
		}
		out = append(out, r)
	}
	return out
}
