package correlation

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// The pipeline, stage by stage (each a small function over one event or one alert, wired in
// order by the processor):
//
//	router (any replica):  origin → normalize → event rules → dedup key → partition
//	partition owner:       threshold → lifecycle (fold) → flapping → CI binding → silences
//	                       → grouping (timer heap) → inhibition → notification
//
// The event stages are pure; the lifecycle is a pure fold of (alert, event, now) into the
// next alert, so a batch of events and a redelivery give the same alert.

// item is one event on its way through the pipeline.
type item struct {
	// seq is the message's sequence in the stream it was read from: EVENTS in the router,
	// the partition stream in a partition (the order of its alert's events there).
	seq uint64
	// eseq is the event's EVENTS sequence (a partition's items): its identity, whatever
	// routes it again.
	eseq uint64
	ev   *envelope.Event
	key  string
	th   *Threshold // the event rule's threshold, if any
	idx  int        // the event's index in its partition message
	// replay: routed by a replay (replay.go): applied only when never taken, state untouched
	replay bool
}

// checkOrigin is the origin stage: a bridge may publish only event.<its site>.>, so the
// subject is the sender's identity; a body claiming another site or source is a forgery or
// a bug, and a retry cannot fix it. event.hub.<service> is the hub's own (no bridge may
// publish there): a hub service speaks about any site, so only the source must match.
func checkOrigin(subject string, ev *envelope.Event) error {
	t := strings.Split(subject, ".")
	if len(t) != 3 || t[0] != "event" {
		return bus.Permanent(fmt.Errorf("event %s arrived on %q, not on event.<site>.<source>", ev.ID, subject))
	}
	if (ev.Site != t[1] && t[1] != bus.OriginHub) || ev.Source != t[2] {
		return bus.Permanent(fmt.Errorf("event %s claims site %q source %q but was sent on %s: a sender may only send its own site's events",
			ev.ID, ev.Site, ev.Source, subject))
	}
	return nil
}

// normalize is the normalize stage: trimmed fields, lower-case node (host names and
// addresses compare case-insensitively), a known severity. An unknown severity cannot be
// fixed by a retry.
func normalize(ev *envelope.Event) error {
	ev.Node = strings.ToLower(strings.TrimSpace(ev.Node))
	ev.Type = strings.TrimSpace(ev.Type)
	ev.Resource = strings.TrimSpace(ev.Resource)
	ev.Metric = strings.TrimSpace(ev.Metric)
	ev.MessageKey = strings.TrimSpace(ev.MessageKey)
	ev.Severity = strings.ToLower(strings.TrimSpace(ev.Severity))
	if ev.Severity == "" {
		ev.Severity = api.DefaultSeverity
	}
	if api.Rank(ev.Severity) < 0 {
		return bus.Permanent(fmt.Errorf("event %s: severity %q: want one of %s", ev.ID, ev.Severity, strings.Join(api.Severities, ", ")))
	}
	if ev.Node == "" && ev.MessageKey == "" {
		return bus.Permanent(fmt.Errorf("event %s has neither node nor message_key: an alert needs something to be about", ev.ID))
	}
	return nil
}

// dedupKey is the dedup stage: events of one key are one alert. Site and source always
// belong to it (two sites may well both have a 10.0.0.1); message_key, when given, stands
// for node, type, resource and metric.
func dedupKey(ev *envelope.Event) string {
	if ev.MessageKey != "" {
		return ev.Site + "|" + ev.Source + "|k|" + ev.MessageKey
	}
	return ev.Site + "|" + ev.Source + "|" + ev.Node + "|" + ev.Type + "|" + ev.Resource + "|" + ev.Metric
}

// slotOf is where the current alert of a dedup key lives in KV: a fixed-length hash, so any
// key fits the KV key alphabet.
func slotOf(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:10])
}

// alertID is deterministic — the key's slot and the place of the event that opened it:
// its partition message's sequence and its index there (several alerts of one key may open
// in one message: open, clear, open) — so the same events always make the same alert,
// however often they are redelivered.
func alertID(slot string, seq uint64, idx int) string {
	return slot + "-" + strconv.FormatUint(seq*alertIDSpan+uint64(idx), 10)
}

// alertIDSpan is above the most events of one partition message (routeMaxEvents, plus the
// last EVENTS message of a part, at most envelope.MaxEventBatch).
const alertIDSpan = 10_000

// slotOfID is the slot part of an alert id.
func slotOfID(id string) (string, bool) {
	slot, seq, ok := strings.Cut(id, "-")
	if !ok || len(slot) != 20 || seq == "" {
		return "", false
	}
	if _, err := hex.DecodeString(slot); err != nil {
		return "", false
	}
	if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
		return "", false
	}
	return slot, true
}

// fold is the lifecycle stage: it applies one event to the current alert of its key (nil:
// none yet) at now. It returns the next alert (nil: nothing to keep, a clear with nothing
// open), the closed alert it replaced when the event opens a new one (to archive), and
// whether anything changed. The caller has skipped the events the alert took already
// (apply: by LastSeq and AppliedEvents).
func fold(cur *api.Alert, it item, now time.Time) (next, archived *api.Alert, changed bool) {
	ev := it.ev
	// The router routes batches concurrently, so two events of one key may reach the
	// partition out of their EVENTS order: the alert's "latest" fields (message, severity,
	// a clear) follow the newest event by EVENTS sequence, not by arrival. Equal sequences
	// are events of one EVENTS message, which come in their order within it.
	newest := cur == nil || it.eseq == 0 || it.eseq >= newestSeq(cur)
	if !newest {
		a := *cur
		a.LastSeq = max(cur.LastSeq, it.seq)
		a.AppliedEvents = addSeq(slices.Clone(cur.AppliedEvents), it.eseq)
		if ev.Severity != api.SeverityClear {
			a.Count++ // an older problem event still counts, into the alert it belongs to
		}
		return &a, nil, true
	}
	if cur == nil || cur.State == api.StateClosed {
		if ev.Severity == api.SeverityClear {
			return cur, nil, false // nothing open to clear
		}
		a := &api.Alert{ID: alertID(slotOf(it.key), it.seq, it.idx), Key: it.key, State: api.StateOpen, Severity: ev.Severity,
			Site: ev.Site, Source: ev.Source, Node: ev.Node, Type: ev.Type, Resource: ev.Resource, Metric: ev.Metric,
			MessageKey: ev.MessageKey, Message: ev.Message, Additional: ev.Fields,
			Count: 1, FirstSeen: now, LastSeen: now, LastSeq: it.seq, LastEvent: it.eseq, FirstEvent: it.eseq, AppliedFrom: 1}
		if cur != nil { // a closed alert's events may still be routed again
			a.AppliedEvents, a.AppliedFrom = slices.Clone(cur.AppliedEvents), cur.AppliedFrom
		}
		a.AppliedEvents = addSeq(a.AppliedEvents, it.eseq)
		return a, cur, true
	}
	a := *cur
	a.LastSeq = it.seq
	a.LastEvent = it.eseq
	a.AppliedEvents = addSeq(slices.Clone(cur.AppliedEvents), it.eseq)
	a.LastSeen = now
	if ev.Message != "" {
		a.Message = ev.Message
	}
	if len(ev.Fields) > 0 {
		a.Additional = ev.Fields
	}
	if ev.Severity == api.SeverityClear {
		t := now
		a.State, a.ClosedAt, a.CloseReason = api.StateClosed, &t, api.ClosedByClear
		return &a, nil, true
	}
	// Count counts the problem events; the latest one's severity is the alert's.
	a.Count++
	a.Severity = ev.Severity
	return &a, nil, true
}

// newestSeq is the EVENTS sequence of the newest event an alert took: LastEvent, or for an
// alert written before it was kept, the highest of its applied sequences (each then the
// sequence of one event).
func newestSeq(a *api.Alert) uint64 {
	if a.LastEvent > 0 {
		return a.LastEvent
	}
	return maxSeq(a.AppliedEvents)
}

// timeout closes an alert nothing touched for d by now; it reports whether it did.
func timeout(a *api.Alert, d time.Duration, now time.Time) (*api.Alert, bool) {
	if d <= 0 || a == nil || a.State == api.StateClosed || now.Before(a.LastSeen.Add(d)) {
		return a, false
	}
	n := *a
	t := now
	n.State, n.ClosedAt, n.CloseReason = api.StateClosed, &t, api.ClosedByTimeout
	return &n, true
}

// silence is the silences stage: it records which active silences mute the alert at now.
func silence(a *api.Alert, ss []api.Silence, now time.Time) {
	a.SilencedBy = nil
	for _, s := range ss {
		if s.Active(now) && s.Matches(a) {
			a.SilencedBy = append(a.SilencedBy, s.ID)
		}
	}
}

// maxSeq is the highest EVENTS sequence in the sorted ranges rs (0: none).
func maxSeq(rs []api.SeqRange) uint64 {
	if len(rs) == 0 {
		return 0
	}
	return rs[len(rs)-1].To
}

// hasSeq reports whether seq is in the sorted, disjoint ranges rs (0: an event of a router
// that did not say its EVENTS sequence, never a duplicate).
func hasSeq(rs []api.SeqRange, seq uint64) bool {
	if seq == 0 {
		return false
	}
	i, _ := slices.BinarySearchFunc(rs, seq, func(r api.SeqRange, s uint64) int { return cmp.Compare(r.To, s) })
	return i < len(rs) && rs[i].From <= seq
}

// addSeq adds seq to the sorted, disjoint ranges rs, merging neighbours: a storm's events,
// consecutive in EVENTS, stay one range.
func addSeq(rs []api.SeqRange, seq uint64) []api.SeqRange {
	if seq == 0 || hasSeq(rs, seq) {
		return rs
	}
	i, _ := slices.BinarySearchFunc(rs, seq, func(r api.SeqRange, s uint64) int { return cmp.Compare(r.To, s) })
	left := i > 0 && rs[i-1].To+1 == seq
	right := i < len(rs) && rs[i].From == seq+1
	switch {
	case left && right:
		rs[i-1].To = rs[i].To
		return slices.Delete(rs, i, i+1)
	case left:
		rs[i-1].To = seq
	case right:
		rs[i].From = seq
	default:
		rs = slices.Insert(rs, i, api.SeqRange{From: seq, To: seq})
	}
	return rs
}
