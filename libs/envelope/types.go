package envelope

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Status of a probe result, as DESIGN.md §2 lists them.
type Status string

const (
	StatusOK      Status = "ok"
	StatusPartial Status = "partial"
	StatusError   Status = "error"
	StatusTimeout Status = "timeout"
	StatusDenied  Status = "denied"
)

// Priorities follow what MID server users know; each has its own consumer and worker pool.
const (
	PriorityInteractive = "interactive"
	PriorityExpedited   = "expedited"
	PriorityStandard    = "standard"
)

// Priorities in the order a bridge serves them.
var Priorities = []string{PriorityInteractive, PriorityExpedited, PriorityStandard}

// Probe is a unit of work the hub sends to a site's bridges (ce-type outpost.probe.v1).
type Probe struct {
	ID          string          `json:"id"`
	Run         string          `json:"run,omitempty"`
	App         string          `json:"app"`
	Site        string          `json:"site"`
	Priority    string          `json:"priority"`
	Kind        string          `json:"kind"`
	Capability  string          `json:"capability"`
	Target      string          `json:"target,omitempty"`
	Params      json.RawMessage `json:"params,omitempty"`
	Credentials []string        `json:"credentials,omitempty"`
	// Secrets are the credentials to try, in order, sealed to the site's bridges (libs/seal).
	Secrets  []SealedCredential `json:"secrets,omitempty"`
	Deadline time.Time          `json:"deadline"`
}

// SealedCredential is one credential sealed to each approved bridge of a site: Boxes maps a
// bridge's curve public key to its sealed copy; Sender is the hub's curve public key.
type SealedCredential struct {
	Name   string            `json:"name"`
	Type   string            `json:"type"`
	Sender string            `json:"sender"`
	Boxes  map[string]string `json:"boxes"`
}

// Result is what a bridge sends back for a probe, possibly in several chunks
// (ce-type outpost.result.v1). ID is unique per chunk and is the dedup key.
type Result struct {
	ID     string `json:"id"`
	Probe  string `json:"probe"`
	Run    string `json:"run,omitempty"`
	App    string `json:"app"`
	Agent  string `json:"agent"`
	Site   string `json:"site"`
	Kind   string `json:"kind"`
	Status Status `json:"status"`
	Seq    int    `json:"seq"`
	Final  bool   `json:"final"`
	// Attempt is the execution of the probe that made this result: the delivery of the
	// probe that ran it (1 the first time; 0 from a bridge that does not say). Every chunk
	// of one execution carries the same attempt, and a probe run twice (redelivered to a
	// sibling after a bridge died mid-scan) has two; a reader assembling chunks keeps those
	// of one attempt together, never mixing two executions' seqs.
	Attempt  int             `json:"attempt,omitempty"`
	Started  time.Time       `json:"started"`
	Finished time.Time       `json:"finished"`
	Data     json.RawMessage `json:"data,omitempty"`
	Error    *Error          `json:"error"`
}

// Error is an error that crosses the wire: a stable code and a message that says what to do.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Event is a raw event from a site or a service (ce-type outpost.event.v1).
type Event struct {
	ID         string    `json:"id"`
	Site       string    `json:"site"`
	Source     string    `json:"source"`
	Type       string    `json:"type"`
	Node       string    `json:"node,omitempty"`
	Resource   string    `json:"resource,omitempty"`
	Metric     string    `json:"metric,omitempty"`
	Severity   string    `json:"severity,omitempty"`
	MessageKey string    `json:"message_key,omitempty"`
	Message    string    `json:"message,omitempty"`
	Time       time.Time `json:"time"`
	// Fields carry what the sender knew beyond the fields above (a trap's varbinds, a
	// syslog message's structured data, a webhook's "additional" keys), as text. On the wire
	// they are "additional", the name event senders know.
	Fields map[string]string `json:"additional,omitempty"`
}

// EventBatch is several events of one sender in one message (ce-type outpost.events.v1):
// a collector's burst (a webhook array, a syslog storm) stored, forwarded and acknowledged
// once for all of them — per message, not per event, is what the bus spends. Each event
// keeps its own id; the message's Nats-Msg-Id is the batch's.
type EventBatch struct {
	Events []Event `json:"events"`
}

// MaxEventBatch bounds the events of one EventBatch: a receiver sizes its work by it.
const MaxEventBatch = 1000

// CIPayload is a set of CIs and relations observed by one source, sent to the CMDB
// (ce-type outpost.ci.v1). Items refer to each other by Ref, local to the payload.
type CIPayload struct {
	Source    string       `json:"source"`
	Observed  time.Time    `json:"observed"`
	Items     []CIItem     `json:"items"`
	Relations []CIRelation `json:"relations,omitempty"`
}

// CIItem is one CI of a payload. Parent names the Ref of the CI that a dependent CI
// (adapter, IP address, software, application) is identified through.
type CIItem struct {
	Ref        string         `json:"ref"`
	Class      string         `json:"class"`
	NativeKey  string         `json:"native_key,omitempty"`
	Parent     string         `json:"parent,omitempty"`
	Attributes map[string]any `json:"attributes"`
}

// CIRelation links two items of a payload by their Refs: From <Type> To (e.g. app runs_on host).
type CIRelation struct {
	Type string `json:"type"`
	From string `json:"from"`
	To   string `json:"to"`
}

// PoolStats is the load of one priority's worker pool on a bridge.
type PoolStats struct {
	Size   int `json:"size"`
	Busy   int `json:"busy"`
	Queued int `json:"queued"`
}

// Heartbeat is sent by a bridge every 10 s on core NATS (ce-type outpost.heartbeat.v1).
type Heartbeat struct {
	Agent        string   `json:"agent"`
	Site         string   `json:"site"`
	Version      string   `json:"version"`
	Capabilities []string `json:"capabilities"`
	// Apps are the applications the bridge serves (outpost-bridge --apps); empty: all.
	Apps        []string             `json:"apps,omitempty"`
	Pools       map[string]PoolStats `json:"pools"`
	OutboxBytes int64                `json:"outbox_bytes"`
	OutboxFull  bool                 `json:"outbox_full,omitempty"`
	// OutboxMessages and OutboxAge (seconds since the oldest message was put) say how far
	// behind the hub the bridge is; ProbesDone counts probes executed since it started.
	OutboxMessages int64   `json:"outbox_messages,omitempty"`
	OutboxAge      float64 `json:"outbox_age_s,omitempty"`
	ProbesDone     int64   `json:"probes_done,omitempty"`
	// ResultsDirect counts results the hub acked on a direct send, ResultsStored those put
	// in the outbox instead (a backlog, no connection, or one of DirectFailures: a direct
	// send that failed or timed out), since the bridge started.
	ResultsDirect  int64   `json:"results_direct,omitempty"`
	ResultsStored  int64   `json:"results_stored,omitempty"`
	DirectFailures int64   `json:"direct_failures,omitempty"`
	State          string  `json:"state"`
	Uptime         float64 `json:"uptime_s"`
	RSS            int64   `json:"rss_bytes"`
	// ProbePanics counts probes whose kind panicked since the bridge started (each was
	// answered with code "panic"; the stacks are in the bridge log).
	ProbePanics int64 `json:"probe_panics,omitempty"`
	// Upgrade is the state of the bridge's last self-upgrade ("upgraded v1.2.3", "failed
	// v1.2.4: bad signature …", "rolled back v1.2.5: …"); empty: none attempted.
	Upgrade string    `json:"upgrade,omitempty"`
	Time    time.Time `json:"time"`
}

// Enrollment is a bridge's request to join a site (ce-type outpost.enrollment.v1). Sig is the
// bridge's NKey signature over SigningBytes: it proves the sender holds the key it enrolls.
type Enrollment struct {
	Name         string   `json:"name"`
	Site         string   `json:"site"`
	Token        string   `json:"token,omitempty"`
	NKey         string   `json:"nkey"`
	XKey         string   `json:"xkey"`
	Version      string   `json:"version"`
	Capabilities []string `json:"capabilities"`
	// Apps are the applications the bridge serves (--apps); empty: all. They decide which
	// probe lanes it may pull, so they are signed.
	Apps  []string       `json:"apps,omitempty"`
	Pools map[string]int `json:"pools,omitempty"`
	Time  time.Time      `json:"time"`
	Sig   string         `json:"sig"`
}

// SigningBytes are what Sig signs: everything that decides the agent's identity and rights
// (version 2: its capabilities and pools too, as they decide its grants).
func (e *Enrollment) SigningBytes() []byte {
	var b strings.Builder
	b.WriteString("outpost-enroll-v2\n" + e.Site + "\n" + e.Name + "\n" + e.NKey + "\n" + e.XKey + "\n" +
		e.Time.UTC().Format(time.RFC3339Nano))
	b.WriteString("\napps=" + strings.Join(e.Apps, ","))
	b.WriteString("\ncapabilities=" + strings.Join(e.Capabilities, ","))
	pools := make([]string, 0, len(e.Pools))
	for k, v := range e.Pools {
		pools = append(pools, k+":"+strconv.Itoa(v))
	}
	slices.Sort(pools)
	b.WriteString("\npools=" + strings.Join(pools, ","))
	return []byte(b.String())
}

// LegacySigningBytes are what bridges from before version 2 signed: no capabilities nor
// pools. The hub accepts such a signature only from a key it already knows, and then keeps
// the capabilities and pools it has on record instead of the unsigned ones sent.
func (e *Enrollment) LegacySigningBytes() []byte {
	b := "outpost-enroll\n" + e.Site + "\n" + e.Name + "\n" + e.NKey + "\n" + e.XKey + "\n" +
		e.Time.UTC().Format(time.RFC3339Nano)
	if len(e.Apps) > 0 {
		// only when set, so a bridge from before --apps still verifies
		b += "\napps=" + strings.Join(e.Apps, ",")
	}
	return []byte(b)
}

// EnrollmentReply is the hub's answer to an enrollment.
type EnrollmentReply struct {
	Status string   `json:"status"` // pending | approved
	Agent  string   `json:"agent"`
	Site   string   `json:"site"`
	Ranges []string `json:"ranges"`
	// Exclude are addresses inside Ranges the bridge must never probe (the site's
	// --exclude): enforced by the bridge for every kind, not only by discovery.
	Exclude      []string `json:"exclude,omitempty"`
	Capabilities []string `json:"capabilities"`
	Message      string   `json:"message,omitempty"`
	// HubKey is the curve public key the hub seals credentials with: the bridge pins it on
	// first approval and refuses credentials sealed by any other key.
	HubKey string `json:"hub_key,omitempty"`
	// ReleaseKey is the hub's release public key (ed25519, base64): the bridge pins it on
	// first approval and runs only builds it signed (libs/release).
	ReleaseKey string `json:"release_key,omitempty"`
	// PinnedVersion is the bridge version the hub pins for the site (`outpost site
	// pin-version`); a bridge behind it upgrades itself. Empty: no pin.
	PinnedVersion string `json:"pinned_version,omitempty"`
	// ProbeGroups are the keys of the site's probe consumer groups this bridge pulls, one
	// consumer per priority each (bus.ProbeConsumer); they change when the site's bridges
	// do, and the bridge is then kicked to reconnect and re-read them.
	ProbeGroups []string `json:"probe_groups,omitempty"`
}

// Change announces that the CMDB created, updated or marked a CI (ce-type outpost.change.v1).
type Change struct {
	CI         string    `json:"ci"`
	Class      string    `json:"class"`
	Op         string    `json:"op"` // created | updated | stale
	Source     string    `json:"source,omitempty"`
	Attributes []string  `json:"attributes,omitempty"`
	Time       time.Time `json:"time"`
}

// Ingested is the CMDB's receipt for one payload (ce-type outpost.ingested.v1, subject
// cmdb.ingested.<source>): what its items became. Its meta carries the payload's run, so a
// producer (discovery) counts created, updated and unchanged CIs per run; Payload is the
// payload's ce-id, so a receipt for a redelivered payload is recognised.
type Ingested struct {
	Payload   string    `json:"payload"`
	Source    string    `json:"source,omitempty"`
	Items     int       `json:"items"`
	Created   int       `json:"created"`
	Updated   int       `json:"updated"`
	Unchanged int       `json:"unchanged"`
	Conflicts int       `json:"conflicts,omitempty"`
	Skipped   int       `json:"skipped,omitempty"`
	Time      time.Time `json:"time"`

	// Refs is what each item became, by its payload ref: an importer sending one row's CI
	// with related CIs tells the row's own outcome from its neighbours'.
	Refs map[string]ItemOutcome `json:"refs,omitempty"`
}

// ItemOutcome is what the CMDB made of one payload item: created, updated, unchanged,
// conflict or skipped; the CI it is (when it is one) and why not (conflict, skipped).
type ItemOutcome struct {
	Outcome string `json:"outcome"` // one of the Item* constants
	CI      string `json:"ci,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Outcomes of one payload item (ItemOutcome.Outcome).
const (
	ItemCreated   = "created"
	ItemUpdated   = "updated"
	ItemUnchanged = "unchanged"
	ItemConflict  = "conflict"
	ItemSkipped   = "skipped"
)

// Audit records a write made through the gateway: who, what, when, from where.
type Audit struct {
	Actor  string    `json:"actor"`
	Role   string    `json:"role,omitempty"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Remote string    `json:"remote,omitempty"`
	Status int       `json:"status,omitempty"`
	Time   time.Time `json:"time"`
}

// Credential types a stored credential may have.
const (
	CredSSH    = "ssh"
	CredSNMP   = "snmp"
	CredSNMPv3 = "snmpv3"
	CredLDAP   = "ldap"
	CredSQL    = "sql"
	// CredHTTP is a secret meant for HTTP only (basic, bearer or a named header): the only
	// type http_request takes, so a stored SSH, SNMP, SQL or LDAP secret can never be sent
	// as an Authorization header to a server an operator chose.
	CredHTTP = "http"
	// CredWinRM is a Windows account for WS-Management (winrm_exec): NTLM by default, so the
	// password itself never crosses the wire; fields.auth basic sends it, only over verified
	// TLS unless the credential allows insecure transport.
	CredWinRM = "winrm"
)

// CredentialTypes are the types a stored credential may have.
var CredentialTypes = []string{CredSSH, CredSNMP, CredSNMPv3, CredLDAP, CredSQL, CredHTTP, CredWinRM}

// Sample is one value of a metric series (ce-type outpost.metric.v1, on METRICS
// metric.<site>.<metric>): collected through a site's bridge for the slot Time names, so a
// redelivered or re-collected slot is the same sample.
type Sample struct {
	Site   string  `json:"site"`
	Metric string  `json:"metric"`
	Target string  `json:"target"`
	Value  float64 `json:"value"`
	// Time is the collection slot the value was taken for (the hub's schedule).
	Time time.Time `json:"time"`
	// Agent is the bridge that took it.
	Agent string `json:"agent,omitempty"`
}
