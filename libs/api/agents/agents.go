// Package agents is the contract of the agents service (svc.agents.<op>): sites, bridge
// enrollment, the agent registry, control commands and ad-hoc probes. The service, the
// gateway, the console, the CLI and the bridge all use these types; none declares its own.
package agents

import (
	"encoding/json"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
)

// Service is the service's name on the bus.
const Service = "agents"

// Operations of svc.agents.<op>.
var (
	Enroll          = bus.Op[envelope.Enrollment, envelope.EnrollmentReply]{Service: Service, Name: "enroll"}
	SiteAdd         = bus.Op[SiteAddRequest, SiteAddReply]{Service: Service, Name: "site_add"}
	SiteList        = bus.Op[page.Request, SiteListReply]{Service: Service, Name: "site_ls"}
	SiteTokenAdd    = bus.Op[TokenAddRequest, TokenAddReply]{Service: Service, Name: "site_token_add"}
	SiteTokenList   = bus.Op[TokenListRequest, TokenListReply]{Service: Service, Name: "site_token_ls"}
	SiteTokenRevoke = bus.Op[TokenRef, TokenView]{Service: Service, Name: "site_token_revoke"}
	List            = bus.Op[page.Request, ListReply]{Service: Service, Name: "ls"}
	Approve         = bus.Op[AgentRef, AgentView]{Service: Service, Name: "approve"}
	Revoke          = bus.Op[AgentRef, AgentView]{Service: Service, Name: "revoke"}
	Forget          = bus.Op[AgentRef, ForgetReply]{Service: Service, Name: "forget"}
	Control         = bus.Op[ControlRequest, ControlReply]{Service: Service, Name: "control"}
	Probe           = bus.Op[ProbeRequest, ProbeReply]{Service: Service, Name: "probe"}
	// SitePinVersion pins the bridge version a site's bridges upgrade to (admin).
	SitePinVersion = bus.Op[PinVersionRequest, Site]{Service: Service, Name: "site_pin_version"}
	// BuildChunk is how a bridge downloads a build: one chunk of one build of the hub's
	// object store per request. It is the only way to read builds BRIDGES is given (no
	// JetStream API of the object store), and it reads nothing else.
	BuildChunk = bus.Op[BuildChunkRequest, BuildChunkReply]{Service: Service, Name: "build_chunk"}
)

// Ops lists every operation of the service.
func Ops() []bus.OpSpec {
	return []bus.OpSpec{Enroll.Spec(), SiteAdd.Spec(), SiteList.Spec(), SiteTokenAdd.Spec(), SiteTokenList.Spec(),
		SiteTokenRevoke.Spec(), List.Spec(), Approve.Spec(), Revoke.Spec(), Forget.Spec(), Control.Spec(), Probe.Spec(),
		SitePinVersion.Spec(), BuildChunk.Spec()}
}

// Agent states in the registry.
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
	// PinnedVersion is the bridge version the site's bridges upgrade to (empty: none).
	PinnedVersion string `json:"pinned_version,omitempty"`
}

// PinVersionRequest pins (or, with an empty version, unpins) a site's bridge version.
type PinVersionRequest struct {
	Site    string `json:"site"`
	Version string `json:"version"`
}

// BuildChunkMax is the most bytes one BuildChunk answer carries (well under the 1 MiB
// message limit once base64-encoded in JSON).
const BuildChunkMax = 512 << 10

// BuildChunkRequest asks for the bytes of a build from Offset.
type BuildChunkRequest struct {
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	Version string `json:"version"`
	Offset  int64  `json:"offset"`
}

// BuildChunkReply is one chunk with the build's size, digest and signature, which the
// bridge checks against the release key it pinned once it has every chunk.
type BuildChunkReply struct {
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	Version   string `json:"version"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	Signature string `json:"signature"`
	Offset    int64  `json:"offset"`
	Data      []byte `json:"data"`
}

// Agent is one bridge's registry record.
type Agent struct {
	ID           string   `json:"id"` // its NKey public key
	Name         string   `json:"name"`
	Site         string   `json:"site"`
	State        string   `json:"state"`
	XKey         string   `json:"xkey"`
	Version      string   `json:"version"`
	Capabilities []string `json:"capabilities"`
	// Apps are the applications the bridge serves (--apps); empty: all.
	Apps     []string       `json:"apps,omitempty"`
	Pools    map[string]int `json:"pools,omitempty"`
	Enrolled time.Time      `json:"enrolled"`
	Approved time.Time      `json:"approved,omitzero"`
	Revoked  time.Time      `json:"revoked,omitzero"`
	// ApprovedProfile is the profile an admin approved (`agents approve`, or an
	// auto-approve token at enrollment). The bridge is granted only what lies both in it and
	// in what it asserts now (Apps, Capabilities): a bridge cannot widen its own rights.
	ApprovedProfile *Profile `json:"approved_profile,omitempty"`
	// Requested is a wider profile the bridge asserted since its approval: not granted
	// until an admin runs `outpost agents approve` again.
	Requested *Profile `json:"requested,omitempty"`
	// ProfileChanged is when the bridge's asserted profile last changed; changes apply at
	// most once per the hub's profile interval, and ProfileRefused counts those refused.
	ProfileChanged time.Time `json:"profile_changed,omitzero"`
	ProfileRefused int       `json:"profile_refused,omitempty"`
}

// Profile is what a bridge takes: its applications (empty: all) and probe capabilities.
type Profile struct {
	Apps         []string `json:"apps,omitempty"`
	Capabilities []string `json:"capabilities"`
}

// Key is SITE.NAME: unique, the agent's NATS user and the order of lists.
func (a Agent) Key() string { return a.Site + "." + a.Name }

// Ref is how the HTTP API names an agent in a path: SITE:NAME.
func (a Agent) Ref() string { return a.Site + ":" + a.Name }

// AgentView is an agent as operators see it: its record plus what its heartbeat says.
type AgentView struct {
	Agent
	Status        string                        `json:"status"` // pending | up | down | paused | draining | revoked
	LastHeartbeat *time.Time                    `json:"last_heartbeat,omitempty"`
	Pools         map[string]envelope.PoolStats `json:"pools,omitempty"`
	OutboxBytes   int64                         `json:"outbox_bytes"`
	OutboxFull    bool                          `json:"outbox_full,omitempty"`
	Uptime        float64                       `json:"uptime_s,omitempty"`
	RSS           int64                         `json:"rss_bytes,omitempty"`
	// Upgrade is the bridge's last self-upgrade state, from its heartbeat.
	Upgrade string `json:"upgrade,omitempty"`
}

// EnrollToken is what is kept of an enrollment token (never the secret).
type EnrollToken struct {
	ID          string    `json:"id"` // first 12 hex chars of the hash: safe to show
	Site        string    `json:"site"`
	AutoApprove bool      `json:"auto_approve"`
	Created     time.Time `json:"created"`
	// Expires is when it stops working. A token without one was made before tokens
	// expired: it is refused (fail closed), `outpost site tokens add` makes a new one.
	Expires time.Time `json:"expires,omitzero"`
	MaxUses int       `json:"max_uses,omitempty"` // enrollments it allows; 0 = any number until it expires
	Used    int       `json:"used,omitempty"`     // enrollments it made
	Revoked time.Time `json:"revoked,omitzero"`
}

// Token states, as listed.
const (
	TokenActive  = "active"
	TokenExpired = "expired"
	TokenUsedUp  = "used-up"
	TokenRevoked = "revoked"
)

// State says whether the token still enrolls bridges at now.
func (t EnrollToken) State(now time.Time) string {
	switch {
	case !t.Revoked.IsZero():
		return TokenRevoked
	case t.Expires.IsZero() || !now.Before(t.Expires):
		return TokenExpired
	case t.MaxUses > 0 && t.Used >= t.MaxUses:
		return TokenUsedUp
	}
	return TokenActive
}

// TokenView is a token as `site tokens ls` shows it.
type TokenView struct {
	EnrollToken
	State    string `json:"state"`               // active | expired | used-up | revoked
	UsesLeft *int   `json:"uses_left,omitempty"` // absent: any number until it expires
}

// SiteAddRequest creates a site (or changes its ranges) and makes an enrollment token.
type SiteAddRequest struct {
	Name        string   `json:"name"`
	Ranges      []string `json:"ranges"`
	Exclude     []string `json:"exclude,omitempty"`
	AutoApprove bool     `json:"auto_approve,omitempty"`
	// TokenTTL is how long the new enrollment token lives ("24h" when empty); TokenUses
	// how many bridges it may enroll (0: any number until it expires).
	TokenTTL  string `json:"token_ttl,omitempty"`
	TokenUses int    `json:"token_uses,omitempty"`
}

// SiteAddReply is the site and its new token; the secret is shown once.
type SiteAddReply struct {
	Site      Site      `json:"site"`
	Token     string    `json:"token"`
	TokenInfo TokenView `json:"token_info"`
}

// SiteListReply is one page of sites, by name.
type SiteListReply struct {
	Sites      []Site `json:"sites"`
	NextCursor string `json:"next_cursor"`
}

// TokenAddRequest makes another enrollment token for an existing site.
type TokenAddRequest struct {
	Site        string `json:"site"`
	TTL         string `json:"ttl,omitempty"`  // "24h" when empty
	Uses        int    `json:"uses,omitempty"` // 0: any number until it expires
	AutoApprove bool   `json:"auto_approve,omitempty"`
}

// TokenAddReply is the new token; the secret is shown once.
type TokenAddReply struct {
	Token     string    `json:"token"`
	TokenInfo TokenView `json:"token_info"`
}

// TokenListRequest lists enrollment tokens, of one site or ("") of all.
type TokenListRequest struct {
	Site string `json:"site,omitempty"`
	page.Request
}

// TokenListReply is one page of tokens, oldest first; never a secret or its hash.
type TokenListReply struct {
	Tokens     []TokenView `json:"tokens"`
	NextCursor string      `json:"next_cursor"`
}

// TokenRef names an enrollment token.
type TokenRef struct {
	ID string `json:"id"`
}

// ListReply is one page of agents, by SITE.NAME.
type ListReply struct {
	Agents     []AgentView `json:"agents"`
	NextCursor string      `json:"next_cursor"`
}

// AgentRef names an agent: NAME or SITE/NAME.
type AgentRef struct {
	Agent string `json:"agent"`
}

// ForgetReply says which agent's name is free again.
type ForgetReply struct {
	Agent  string `json:"agent"`
	Site   string `json:"site"`
	Status string `json:"status"` // forgotten
}

// Control commands a bridge understands.
const (
	CommandPing   = "ping"
	CommandPause  = "pause"
	CommandResume = "resume"
	CommandDrain  = "drain"
	CommandLogs   = "logs"
)

// ControlCommand is a command for a bridge: the body of POST /api/v1/agents/{agent}/control,
// and what the bridge reads of a ControlRequest.
type ControlCommand struct {
	Command string `json:"command"` // ping | pause | resume | drain | logs
	Lines   int    `json:"lines,omitempty"`
}

// ControlRequest sends a command to an agent (NAME or SITE/NAME).
type ControlRequest struct {
	Agent string `json:"agent"`
	ControlCommand
}

// ControlReply is the bridge's answer, with the round trip the agents service measured.
type ControlReply struct {
	OK        bool                `json:"ok"`
	Agent     string              `json:"agent"`
	Site      string              `json:"site"`
	State     string              `json:"state,omitempty"`     // ping, pause, resume, drain
	Version   string              `json:"version,omitempty"`   // ping
	Heartbeat *envelope.Heartbeat `json:"heartbeat,omitempty"` // ping
	Lines     []string            `json:"lines,omitempty"`     // logs
	Error     string              `json:"error,omitempty"`     // when not OK
	RTTMillis float64             `json:"rtt_ms,omitempty"`
}

// ProbeRequest sends one ad-hoc probe (interactive unless told) and waits for its result.
type ProbeRequest struct {
	Site     string          `json:"site"`
	Kind     string          `json:"kind"`
	Target   string          `json:"target,omitempty"`
	Params   json.RawMessage `json:"params,omitempty"`
	Priority string          `json:"priority,omitempty"`
	Timeout  string          `json:"timeout,omitempty"`
	// Credentials name stored credentials (discovery's store) to try, in order; the
	// discovery service seals them to the site's bridges for this probe only.
	Credentials []string `json:"credentials,omitempty"`
}

// ProbeReply is the probe's results, the final one last.
type ProbeReply struct {
	Probe   string            `json:"probe"`
	Results []envelope.Result `json:"results"`
}
