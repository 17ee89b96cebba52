package correlation

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// Time grouping, Alertmanager's semantics, without its goroutine per aggregation group: a
// group is a struct in its partition's map with one entry in the partition's timer heap.
//
//   - a group forms with its first alert and is notified GroupWait later (alerts arriving
//     meanwhile go into the same notification);
//   - then it is looked at every GroupInterval: notified when what it would say changed
//     (an alert fired, resolved, was silenced or inhibited), or when RepeatInterval passed
//     since the last notification with alerts still firing;
//   - resolved alerts are notified once, then leave the group; a group with no alert left
//     is forgotten.
//
// Silences and inhibition are applied at the group's tick, so a silence that ends lets its
// alerts through at the next tick, with no sweep over all alerts.
type group struct {
	key    string
	alerts map[string]*api.Alert // slot → the alert as last written
	// sent is what the last notification said (hash), and when.
	sent   string
	sentAt time.Time
	ticks  bool // has an entry in the heap
}

// Notification is what a notifier sends for a group.
type Notification struct {
	// GroupKey names the group (its group_by fields); the same group always has the same key.
	GroupKey string `json:"group_key"`
	// ID is the group key and content hash: the same notification always has the same ID, so
	// a receiver can drop a repeat (the Idempotency-Key of the webhook).
	ID       string      `json:"id"`
	Status   string      `json:"status"` // firing (any alert firing) or resolved
	Firing   []api.Alert `json:"firing"`
	Resolved []api.Alert `json:"resolved,omitempty"`
	// Flapping lists the alerts changing state too often: they are reported once, not at
	// every change, until they settle.
	Flapping []api.Alert `json:"flapping,omitempty"`
	// RootCause is the alert the others most likely follow from (correlate rules, or the
	// topology group of a firing alert that is its root cause), if any.
	RootCause string `json:"root_cause,omitempty"`
	// Correlated are this group's alerts whose probable root cause is an alert of another
	// group (topology): not firing here, notified with their cause.
	Correlated []api.Alert `json:"correlated,omitempty"`
	// Related are the alerts of other groups that follow from this group's root cause.
	Related []string  `json:"related,omitempty"`
	Time    time.Time `json:"time"`
}

// track puts a written alert in its group and starts the group's timer when it forms.
func (p *processor) track(slot string, a *api.Alert, now time.Time) {
	if a == nil || a.CloseReason == api.ClosedByReplay {
		return // a replay record never joins a group: old events notify nothing
	}
	key := p.s.rules.groupKey(a.Field)
	g := p.groups[key]
	if g == nil {
		if a.State == api.StateClosed {
			return // closed before it was ever notified: nothing to say
		}
		g = &group{key: key, alerts: map[string]*api.Alert{}}
		p.groups[key] = g
	}
	g.alerts[slot] = a
	if !g.ticks {
		due := now.Add(p.s.rules.grouping.GroupWait)
		if !g.sentAt.IsZero() {
			due = maxTime(now, g.sentAt.Add(p.s.rules.grouping.GroupInterval))
		}
		g.ticks = true
		heap.Push(&p.timers, timer{due: due, group: key})
	}
}

// tickGroup is a group's timer: notify if needed, then tick again GroupInterval later while
// the group has alerts.
func (p *processor) tickGroup(ctx context.Context, key string, now time.Time) {
	g := p.groups[key]
	if g == nil {
		return
	}
	g.ticks = false
	n := p.notification(g, now)
	hash := n.ID
	due := g.sent != hash || (len(n.Firing) > 0 && !now.Before(g.sentAt.Add(p.s.rules.grouping.RepeatInterval)))
	if due && (len(n.Firing) > 0 || len(n.Resolved) > 0 || len(n.Flapping) > 0 || g.sent != "") {
		if len(n.Firing)+len(n.Resolved)+len(n.Flapping) > 0 {
			p.s.notify.enqueue(ctx, n)
		}
		g.sent, g.sentAt = hash, now
	}
	for slot, a := range g.alerts {
		if a.State == api.StateClosed {
			delete(g.alerts, slot)
		}
	}
	if len(g.alerts) == 0 {
		delete(p.groups, key)
		return
	}
	g.ticks = true
	heap.Push(&p.timers, timer{due: now.Add(p.s.rules.grouping.GroupInterval), group: key})
}

// notification is what the group says now: firing alerts (not silenced, not inhibited,
// not flapping), resolved ones, flapping ones.
func (p *processor) notification(g *group, now time.Time) Notification {
	active := p.s.activeSilences()
	n := Notification{GroupKey: g.key, Time: now, Firing: []api.Alert{}}
	slots := make([]string, 0, len(g.alerts))
	for s := range g.alerts {
		slots = append(slots, s)
	}
	sort.Strings(slots)
	var sum strings.Builder
	sum.WriteString(g.key)
	for _, slot := range slots {
		a := *g.alerts[slot]
		silence(&a, active, now)
		switch {
		case a.Flapping:
			n.Flapping = append(n.Flapping, a)
			sum.WriteString("|f:" + slot)
		case a.State == api.StateClosed:
			n.Resolved = append(n.Resolved, a)
			sum.WriteString("|r:" + a.ID)
		case len(a.SilencedBy) > 0:
			sum.WriteString("|s:" + a.ID)
		case p.inhibited(&a):
			sum.WriteString("|i:" + a.ID)
		case p.correlated(&a):
			n.Correlated = append(n.Correlated, a)
			sum.WriteString("|t:" + a.ID + ":" + a.RootCause)
		default:
			n.Firing = append(n.Firing, a)
			sum.WriteString("|a:" + a.ID + ":" + a.Severity)
		}
	}
	n.Status = "resolved"
	if len(n.Firing) > 0 {
		n.Status = "firing"
	}
	n.RootCause = p.rootCause(n.Firing)
	for _, a := range n.Firing {
		if ref, ok := p.s.topologyOf(a.ID); ok && ref.root == a.ID {
			if n.RootCause == "" {
				n.RootCause = a.ID
			}
			for _, id := range p.s.topologyGroup(ref.group).Alerts {
				if _, here := g.alerts[slotOfIDOr(id)]; !here {
					n.Related = append(n.Related, id)
				}
			}
			sum.WriteString("|rel:" + strings.Join(n.Related, ","))
		}
	}
	h := sha256.Sum256([]byte(sum.String()))
	n.ID = hex.EncodeToString(h[:12])
	return n
}

// correlated: the alert is in a topology group whose root cause is another alert (a
// follower, not a cause: its cause's notification names it). It records the root cause.
func (p *processor) correlated(a *api.Alert) bool {
	ref, ok := p.s.topologyOf(a.ID)
	if !ok || ref.root == a.ID {
		return false
	}
	a.TopologyGroup, a.RootCause = ref.group, ref.root
	return true
}

// inhibited: a firing alert in this partition matches an inhibit rule's source, a has the
// same equal fields and matches its target. Inhibition sees the alerts of its partition:
// equal fields should include the group_by fields (the default, node, does).
func (p *processor) inhibited(a *api.Alert) bool {
	for _, in := range p.s.rules.inhibit {
		if !in.target.matches(a.Field) {
			continue
		}
		for _, g := range p.groups {
			for _, src := range g.alerts {
				if src.ID == a.ID || src.State == api.StateClosed || !in.source.matches(src.Field) {
					continue
				}
				same := true
				for _, f := range in.equal {
					if src.Field(f) != a.Field(f) {
						same = false
						break
					}
				}
				if same {
					return true
				}
			}
		}
	}
	return false
}

// rootCause applies the correlate rules to a group's firing alerts: a primary with
// secondaries first seen within the window of it is the probable cause.
func (p *processor) rootCause(firing []api.Alert) string {
	for _, c := range p.s.rules.correlate {
		for _, pr := range firing {
			if !c.primary.matches(pr.Field) {
				continue
			}
			for _, sec := range firing {
				if sec.ID != pr.ID && c.secondary.matches(sec.Field) && absDur(sec.FirstSeen.Sub(pr.FirstSeen)) <= c.window {
					return pr.ID
				}
			}
		}
	}
	return ""
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
