// Package correlation is the contract of the correlation service (svc.correlation.<op>) and
// of the events every producer sends it: the bridge's collectors, hub services and the API.
// The service, the bridge, the gateway and the CLI import these types; nobody mirrors them.
package correlation

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
)

// Service is the bus name of the correlation service.
const Service = "correlation"

// Operations of svc.correlation.<op>. Errors are bus.ServiceErrors: 400 bad input (naming
// the field), 404 unknown alert or silence, 409 acknowledging a closed alert, 503 store
// unavailable (retry).
var (
	// EventSend publishes an event from the API on event.hub.api.
	EventSend     = bus.Op[EventInput, EventSendResponse]{Service: Service, Name: "event_send"}
	AlertList     = bus.Op[AlertsListRequest, AlertsListResponse]{Service: Service, Name: "alerts_ls"}
	AlertGet      = bus.Op[IDRequest, Alert]{Service: Service, Name: "alert_get"}
	AlertAck      = bus.Op[IDRequest, Alert]{Service: Service, Name: "alert_ack"}
	AlertClose    = bus.Op[IDRequest, Alert]{Service: Service, Name: "alert_close"}
	SilenceAdd    = bus.Op[SilenceAddRequest, Silence]{Service: Service, Name: "silences_add"}
	SilenceList   = bus.Op[page.Request, SilencesListResponse]{Service: Service, Name: "silences_ls"}
	SilenceRemove = bus.Op[IDRequest, Silence]{Service: Service, Name: "silences_rm"}
	// GroupList lists the topology groups: alerts on related CIs, with their probable root cause.
	GroupList = bus.Op[page.Request, GroupsListResponse]{Service: Service, Name: "groups_ls"}
	// Replay re-routes the events EVENTS kept, with their original EVENTS sequences, to the
	// partitions (outpost replay --stream EVENTS --to correlation): an event an alert took
	// already is skipped, one never applied is taken once (ReplayRequest).
	Replay = bus.Op[ReplayRequest, ReplayReply]{Service: Service, Name: "replay"}
)

// Ops lists every operation of the service.
func Ops() []bus.OpSpec {
	return append([]bus.OpSpec{EventSend.Spec(), AlertList.Spec(), AlertGet.Spec(), AlertAck.Spec(), AlertClose.Spec(),
		SilenceAdd.Spec(), SilenceList.Spec(), SilenceRemove.Spec(), GroupList.Spec(), Replay.Spec()}, collectOps()...)
}

// Severities of an event, most severe first; Clear closes the alert of its dedup key.
const (
	SeverityCritical = "critical"
	SeverityMajor    = "major"
	SeverityMinor    = "minor"
	SeverityWarning  = "warning"
	SeverityInfo     = "info"
	SeverityClear    = "clear"
)

// Severities in order, most severe first.
var Severities = []string{SeverityCritical, SeverityMajor, SeverityMinor, SeverityWarning, SeverityInfo, SeverityClear}

// DefaultSeverity is what an event without one gets: an unlabelled event sent to an
// alerting system is more likely to matter than not.
const DefaultSeverity = SeverityWarning

// Rank orders severities: critical 5 … info 1, clear 0, unknown -1.
func Rank(sev string) int {
	for i, s := range Severities {
		if s == sev {
			return len(Severities) - 1 - i
		}
	}
	return -1
}

// Alert states. An alert is open until acknowledged or closed; closed is final: the next
// event of its dedup key opens a new alert.
const (
	StateOpen         = "open"
	StateAcknowledged = "acknowledged"
	StateClosed       = "closed"
)

// Why an alert closed.
const (
	ClosedByClear   = "clear"
	ClosedByTimeout = "timeout"
	ClosedByUser    = "manual"
	// ClosedByReplay marks a replay record: events a replay took that belong to no open
	// alert (their key's alert closed, or the events older than it), kept closed so that
	// old events never fire, notify or remediate (ReplayRequest).
	ClosedByReplay = "replayed"
)

// Event sources the bridge's collectors and the hub publish as (event.<site>.<source>).
const (
	SourceSyslog  = "syslog"
	SourceTrap    = "trap"
	SourceWebhook = "webhook"
	SourceAPI     = "api"
)

// EventInput is an event as a sender writes it: the webhook collector's body (one object or
// an array) and the API's (outpost events send). Additional takes any JSON values; they are
// kept as text.
type EventInput struct {
	Node       string         `json:"node,omitempty"`
	Type       string         `json:"type,omitempty"`
	Resource   string         `json:"resource,omitempty"`
	Metric     string         `json:"metric,omitempty"`
	Severity   string         `json:"severity,omitempty"`
	Message    string         `json:"message,omitempty"`
	MessageKey string         `json:"message_key,omitempty"`
	Time       *time.Time     `json:"time,omitempty"`
	Additional map[string]any `json:"additional,omitempty"`
}

// Limits of one event's fields, so that one event always fits a bus message.
const (
	MaxFieldLen   = 1024
	MaxMessageLen = 64 << 10
	MaxAdditional = 64
)

// Validate reports every problem of the event at once.
func (e EventInput) Validate() error {
	var errs []error
	for _, f := range [][2]string{{"node", e.Node}, {"type", e.Type}, {"resource", e.Resource}, {"metric", e.Metric}, {"message_key", e.MessageKey}} {
		if len(f[1]) > MaxFieldLen {
			errs = append(errs, fmt.Errorf("field %q: %d bytes, at most %d", f[0], len(f[1]), MaxFieldLen))
		}
	}
	if e.Severity != "" && Rank(e.Severity) < 0 {
		errs = append(errs, fmt.Errorf("field \"severity\" %q: want one of %s", e.Severity, strings.Join(Severities, ", ")))
	}
	if len(e.Message) > MaxMessageLen {
		errs = append(errs, fmt.Errorf("field \"message\": %d bytes, at most %d", len(e.Message), MaxMessageLen))
	}
	if e.Node == "" && e.MessageKey == "" {
		errs = append(errs, errors.New(`field "node" is required (or "message_key"): an alert needs something to be about`))
	}
	if len(e.Additional) > MaxAdditional {
		errs = append(errs, fmt.Errorf("field \"additional\": %d keys, at most %d", len(e.Additional), MaxAdditional))
	}
	return errors.Join(errs...)
}

// Event makes the bus event of an input received at site through source, now. Type
// defaults to the source, severity to DefaultSeverity, time to now.
func (e EventInput) Event(id, site, source string, now time.Time) *envelope.Event {
	ev := &envelope.Event{ID: id, Site: site, Source: source, Type: e.Type, Node: e.Node, Resource: e.Resource,
		Metric: e.Metric, Severity: e.Severity, MessageKey: e.MessageKey, Message: e.Message, Time: now.UTC()}
	if ev.Type == "" {
		ev.Type = source
	}
	if ev.Severity == "" {
		ev.Severity = DefaultSeverity
	}
	if e.Time != nil && !e.Time.IsZero() {
		ev.Time = e.Time.UTC()
	}
	if len(e.Additional) > 0 {
		ev.Fields = make(map[string]string, len(e.Additional))
		for k, v := range e.Additional {
			if s, ok := v.(string); ok {
				ev.Fields[k] = s
			} else {
				b, _ := json.Marshal(v)
				ev.Fields[k] = string(b)
			}
		}
	}
	return ev
}

// EventSendResponse says where the API's event went.
type EventSendResponse struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
}

// Alert is the deduplicated state of the events of one dedup key.
type Alert struct {
	ID string `json:"id"`
	// Key is the dedup key: site, source, node, type, resource and metric — or site, source
	// and message_key when the event gave one.
	Key        string            `json:"key"`
	State      string            `json:"state"`
	Severity   string            `json:"severity"`
	Site       string            `json:"site"`
	Source     string            `json:"source"`
	Node       string            `json:"node,omitempty"`
	Type       string            `json:"type,omitempty"`
	Resource   string            `json:"resource,omitempty"`
	Metric     string            `json:"metric,omitempty"`
	MessageKey string            `json:"message_key,omitempty"`
	Message    string            `json:"message"`
	Additional map[string]string `json:"additional,omitempty"`
	// CI is the CMDB CI the node was bound to (by name or IP), empty when none matched.
	CI      string `json:"ci,omitempty"`
	CIClass string `json:"ci_class,omitempty"`
	// Count is how many events the alert took (a clear event included).
	Count     int64      `json:"count"`
	FirstSeen time.Time  `json:"first_seen"`
	LastSeen  time.Time  `json:"last_seen"`
	AckedAt   *time.Time `json:"acked_at,omitempty"`
	ClosedAt  *time.Time `json:"closed_at,omitempty"`
	// CloseReason: clear, timeout or manual.
	CloseReason string `json:"close_reason,omitempty"`
	// Group is the alert's group: its group_by fields (the rule files' grouping).
	Group string `json:"group,omitempty"`
	// Flapping: the alert changed state too often lately (the rule files' flapping); its
	// group reports it once rather than at every change.
	Flapping bool `json:"flapping,omitempty"`
	// TopologyGroup is the topology group the alert is in (alerts on CMDB CIs related by
	// runs_on, depends_on, connected_to or contains, first seen within the window of each
	// other); RootCause is that group's probable root cause (an alert id; the alert's own
	// when it is the cause). Both are computed, not stored with the alert.
	TopologyGroup string `json:"topology_group,omitempty"`
	RootCause     string `json:"root_cause,omitempty"`
	// Remediations are the workflows the rule files' remediate rules started for the alert
	// when it opened (one per matching rule).
	Remediations []Remediation `json:"remediations,omitempty"`
	// SilencedBy lists the silences that mute the alert now.
	SilencedBy []string `json:"silenced_by,omitempty"`
	// LastSeq is the partition stream sequence of the last event applied: a redelivered
	// partition message at or below it is not counted again.
	LastSeq uint64 `json:"last_seq"`
	// LastEvent is the EVENTS sequence of the newest event the alert took: its latest
	// fields are that event's, whatever order events of several batches arrive in.
	LastEvent uint64 `json:"last_event,omitempty"`
	// FirstEvent is the EVENTS sequence of the event that opened the alert: a replayed
	// event older than it is not this alert's (0: written before it was kept).
	FirstEvent uint64 `json:"first_event,omitempty"`
	// AppliedFrom is the EVENTS sequence from which the key's applied sequences are all
	// known (AppliedEvents and the service's applied ledger); a replayed event below it is
	// taken as applied. 1 for a key first seen by a version that keeps them all; the events
	// consumer's floor when an alert of an older version was first rewritten.
	AppliedFrom uint64 `json:"applied_from,omitempty"`
	// AppliedEvents are the EVENTS sequences whose events of this alert's key the alert
	// has taken, as ranges (the router covers a whole batch of EVENTS messages at once),
	// kept while the router may still route them again (above the events consumer's
	// acknowledgement floor when the alert was written, and the newest ranges below it):
	// an event routed twice, in another batch or after a restart of the hub's server forgot
	// the partition stream's duplicate ids, arrives with a new partition sequence and is
	// still not counted twice. Older ranges move to the service's applied ledger (stream
	// CORR_APPLIED), where a replay finds them.
	AppliedEvents []SeqRange `json:"applied_events,omitempty"`
}

// SeqRange is the stream sequences From..To, both included.
type SeqRange struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// AlertsListRequest selects alerts; newest last_seen first.
type AlertsListRequest struct {
	State string `json:"state,omitempty"` // open, acknowledged or closed; empty: all
	Node  string `json:"node,omitempty"`
	page.Request
}

// Validate checks the filter.
func (r AlertsListRequest) Validate() error {
	switch r.State {
	case "", StateOpen, StateAcknowledged, StateClosed:
		return nil
	}
	return fmt.Errorf("field \"state\" %q: want open, acknowledged or closed", r.State)
}

// AlertsListResponse is one page of alerts.
type AlertsListResponse struct {
	Items      []Alert `json:"items"`
	NextCursor string  `json:"next_cursor,omitempty"`
}

// IDRequest names one alert or silence.
type IDRequest struct {
	ID string `json:"id"`
}

// SilenceAddRequest mutes the alerts whose fields match every k=v of Match, for For.
type SilenceAddRequest struct {
	Match   map[string]string `json:"match"`
	For     string            `json:"for"` // a Go duration: 30m, 2h
	Comment string            `json:"comment,omitempty"`
}

// MaxSilence is the longest a silence may last: longer ones are forgotten, not silences.
const MaxSilence = 90 * 24 * time.Hour

// MatchKeys are the alert fields a silence matches; additional.<k> matches an additional key.
var MatchKeys = []string{"site", "source", "node", "type", "resource", "metric", "severity", "message_key", "ci"}

// Validate reports every problem at once and returns the duration.
func (r SilenceAddRequest) Validate() (time.Duration, error) {
	var errs []error
	if len(r.Match) == 0 {
		errs = append(errs, errors.New(`field "match": at least one k=v, e.g. node=web-01`))
	}
	keys := make([]string, 0, len(r.Match))
	for k := range r.Match {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !validMatchKey(k) {
			errs = append(errs, fmt.Errorf("match key %q: want one of %s or additional.<key>", k, strings.Join(MatchKeys, ", ")))
		}
		if r.Match[k] == "" {
			errs = append(errs, fmt.Errorf("match %s: empty value", k))
		}
	}
	d, err := time.ParseDuration(r.For)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("field \"for\" %q: want a duration such as 30m or 2h", r.For))
	case d <= 0 || d > MaxSilence:
		errs = append(errs, fmt.Errorf("field \"for\" %s: want more than 0 and at most %s", d, MaxSilence))
	}
	return d, errors.Join(errs...)
}

func validMatchKey(k string) bool {
	if rest, ok := strings.CutPrefix(k, "additional."); ok {
		return rest != ""
	}
	for _, m := range MatchKeys {
		if m == k {
			return true
		}
	}
	return false
}

// Silence mutes matching alerts between StartsAt and EndsAt.
type Silence struct {
	ID        string            `json:"id"`
	Match     map[string]string `json:"match"`
	StartsAt  time.Time         `json:"starts_at"`
	EndsAt    time.Time         `json:"ends_at"`
	Comment   string            `json:"comment,omitempty"`
	CreatedBy string            `json:"created_by,omitempty"`
}

// Active reports whether the silence mutes at t.
func (s Silence) Active(t time.Time) bool { return !t.Before(s.StartsAt) && t.Before(s.EndsAt) }

// Matches reports whether every matcher equals the alert's field.
func (s Silence) Matches(a *Alert) bool {
	for k, v := range s.Match {
		if a.Field(k) != v {
			return false
		}
	}
	return true
}

// Field is the value of one of MatchKeys (or additional.<key>) of the alert.
func (a *Alert) Field(k string) string {
	switch k {
	case "site":
		return a.Site
	case "source":
		return a.Source
	case "node":
		return a.Node
	case "type":
		return a.Type
	case "resource":
		return a.Resource
	case "metric":
		return a.Metric
	case "severity":
		return a.Severity
	case "message_key":
		return a.MessageKey
	case "ci":
		return a.CI
	}
	if rest, ok := strings.CutPrefix(k, "additional."); ok {
		return a.Additional[rest]
	}
	return ""
}

// SilencesListResponse is one page of silences (expired ones included until purged).
type SilencesListResponse struct {
	Items      []Silence `json:"items"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

// TopologyGroup is alerts on related CIs taken as one incident: RootCause is the alert on
// the CI the others depend on (the target of runs_on and depends_on, the container of
// contains, the CI with the most connected_to links), ties going to the earliest.
type TopologyGroup struct {
	ID        string         `json:"id"`
	RootCause string         `json:"root_cause"`
	RootCI    string         `json:"root_ci"`
	RootNode  string         `json:"root_node,omitempty"`
	Alerts    []string       `json:"alerts"`
	CIs       []string       `json:"cis"`
	Links     []TopologyLink `json:"links"`
	Updated   time.Time      `json:"updated"`
}

// TopologyLink is a CMDB relation that joined two alerts' CIs into a group.
type TopologyLink struct {
	Type string `json:"type"`
	From string `json:"from"`
	To   string `json:"to"`
}

// GroupsListResponse is one page of topology groups.
type GroupsListResponse struct {
	Items      []TopologyGroup `json:"items"`
	NextCursor string          `json:"next_cursor,omitempty"`
}

// Remediation states: pending until the orchestration service took the run, then started
// (Run is its id) or failed (Error says why; the request is also in the DLQ).
const (
	RemediationPending = "pending"
	RemediationStarted = "started"
	RemediationFailed  = "failed"
)

// Remediation is one orchestration run an alert started.
type Remediation struct {
	Rule     string `json:"rule"`
	Workflow string `json:"workflow"`
	State    string `json:"state"`
	Run      string `json:"run,omitempty"`
	Error    string `json:"error,omitempty"`
}

// ReplayRequest re-routes the events EVENTS kept to the correlation partitions, each with
// its original EVENTS sequence, through today's event rules (origin, normalize, ignore,
// transform, dedup key). An event its key's alerts took already (AppliedEvents, the applied
// ledger) is skipped, so replaying a range twice changes nothing the second time; an event
// never applied (dropped by a rule since removed, lost with a wiped alert bucket) is taken
// once: into its key's open alert when it is not older than the alert (Count grows; state,
// severity and message stay), else into a closed replay record (ClosedByReplay). A replay
// never opens, reopens, closes or notifies an alert. Since/Until and FromSeq/ToSeq bound
// what is read; a reply covers at most Limit messages and says where to go on (Next).
type ReplayRequest struct {
	Stream  string `json:"stream,omitempty"`   // EVENTS (the default): the only stream correlation replays
	Since   string `json:"since,omitempty"`    // events stored in the last Since (10m) or from an RFC 3339 time
	Until   string `json:"until,omitempty"`    // events stored before Until ago (5m) or before an RFC 3339 time
	FromSeq uint64 `json:"from_seq,omitempty"` // events from this EVENTS sequence on
	ToSeq   uint64 `json:"to_seq,omitempty"`   // events up to this EVENTS sequence
	Limit   int    `json:"limit,omitempty"`    // messages read per request (default and cap: ReplayLimit)
	DryRun  bool   `json:"dry_run,omitempty"`  // route nothing: count what would be applied
}

// ReplayLimit is the most EVENTS messages one replay request reads; the CLI goes on from Next.
const ReplayLimit = 2000

// ReplayReply says what one replay request read and routed (dry run: would route). The
// partitions apply routed events a moment later; Applied is what the alerts as read by the
// request had not taken yet.
type ReplayReply struct {
	Messages int    `json:"messages"`            // EVENTS messages read
	Events   int    `json:"events"`              // events in them
	FirstSeq uint64 `json:"first_seq,omitempty"` // EVENTS sequences of the first and last read
	LastSeq  uint64 `json:"last_seq,omitempty"`
	// Next, when not 0, is the sequence to go on from (from_seq): the request stopped at
	// its limit before the end of the range.
	Next    uint64 `json:"next,omitempty"`
	Ignored int    `json:"ignored"` // dropped by today's event rules (counted per rule, as live)
	Invalid int    `json:"invalid"` // refused by origin/normalize (the live router dead-lettered them)
	Skipped int    `json:"skipped"` // taken by their alerts already (or before the key's AppliedFrom)
	Applied int    `json:"applied"` // not taken yet: routed to be applied once (dry run: would be)
	// Alerts is how many alerts the applied events touch: open alerts whose count grows
	// (AlertsOpen) and keys whose events go into a closed replay record (Records).
	Alerts     int  `json:"alerts"`
	AlertsOpen int  `json:"alerts_open"`
	Records    int  `json:"records"`
	DryRun     bool `json:"dry_run,omitempty"`
}
