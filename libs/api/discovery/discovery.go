// Package discovery is the contract of the discovery service (svc.discovery.<op>): runs,
// schedules, target credentials (secrets write-only) and known SSH host keys. The service,
// the gateway, the console, the CLI and the agents service use these types.
package discovery

import (
	"encoding/json"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
)

// Service is the service's name on the bus.
const Service = "discovery"

// Operations of svc.discovery.<op>.
var (
	Start             = bus.Op[StartRequest, StartReply]{Service: Service, Name: "start"}
	RunList           = bus.Op[page.Request, RunListReply]{Service: Service, Name: "runs_ls"}
	RunGet            = bus.Op[IDRequest, Run]{Service: Service, Name: "run_get"}
	Cancel            = bus.Op[IDRequest, CancelReply]{Service: Service, Name: "cancel"}
	CredentialAdd     = bus.Op[CredentialAddRequest, CredentialReply]{Service: Service, Name: "credentials_add"}
	CredentialList    = bus.Op[page.Request, CredentialListReply]{Service: Service, Name: "credentials_ls"}
	CredentialSeal    = bus.Op[SealRequest, SealReply]{Service: Service, Name: "credentials_seal"}
	CredentialRemove  = bus.Op[NameRequest, RemovedReply]{Service: Service, Name: "credentials_rm"}
	ScheduleAdd       = bus.Op[Schedule, ScheduleReply]{Service: Service, Name: "schedules_add"}
	ScheduleList      = bus.Op[page.Request, ScheduleListReply]{Service: Service, Name: "schedules_ls"}
	ScheduleRemove    = bus.Op[NameRequest, RemovedReply]{Service: Service, Name: "schedules_rm"}
	HostKeyList       = bus.Op[page.Request, HostKeyListReply]{Service: Service, Name: "hostkeys_ls"}
	HostKeyForget     = bus.Op[HostKeysRequest, HostKeyForgetReply]{Service: Service, Name: "hostkeys_forget"}
	ClassifiersReload = bus.Op[struct{}, ClassifiersReply]{Service: Service, Name: "classifiers_reload"}
	// Replay re-derives a run from the results it stored (outpost replay --to discovery).
	Replay = bus.Op[ReplayRequest, ReplayReply]{Service: Service, Name: "replay"}
)

// Ops lists every operation of the service.
func Ops() []bus.OpSpec {
	return []bus.OpSpec{Start.Spec(), RunList.Spec(), RunGet.Spec(), Cancel.Spec(), CredentialAdd.Spec(), CredentialList.Spec(),
		CredentialSeal.Spec(), CredentialRemove.Spec(), ScheduleAdd.Spec(), ScheduleList.Spec(), ScheduleRemove.Spec(),
		HostKeyList.Spec(), HostKeyForget.Spec(), ClassifiersReload.Spec(), Replay.Spec()}
}

// Run states.
const (
	StateQueued      = "queued"
	StateScanning    = "scanning"
	StateClassifying = "classifying"
	StateExploring   = "exploring"
	StateCompleted   = "completed"
	StateFailed      = "failed"
	StateCanceled    = "canceled"
)

// Final reports whether a run in state s will not change any more.
func Final(s string) bool { return s == StateCompleted || s == StateFailed || s == StateCanceled }

// StartRequest starts a run. Ranges default to the site's.
type StartRequest struct {
	Site        string   `json:"site"`
	Ranges      []string `json:"ranges,omitempty"`
	Exclude     []string `json:"exclude,omitempty"`
	Ports       []int    `json:"ports,omitempty"`
	Credentials []string `json:"credentials,omitempty"`
	MaxRunTime  string   `json:"max_run_time,omitempty"`
}

// StartReply names the run started.
type StartReply struct {
	Run string `json:"run"`
}

// IDRequest names a run; run_get's Host is "" for the host table, an address for that
// host in full, "-" for the run alone.
type IDRequest struct {
	ID   string `json:"id"`
	Host string `json:"host,omitempty"`
}

// NameRequest names a credential or a schedule.
type NameRequest struct {
	Name string `json:"name"`
}

// RemovedReply names what was removed.
type RemovedReply struct {
	Removed string `json:"removed"`
}

// CancelReply is the run's state after the cancel.
type CancelReply struct {
	Run   string `json:"run"`
	State string `json:"state"`
}

// Counters of a run. The CMDB decides insert, update or no change; its receipt for each
// host's payload (cmdb.ingested.discovery) is counted in CIsCreated/Updated/Unchanged.
type Counters struct {
	Addresses    int `json:"addresses"`    // in the ranges, after exclusions
	Scanned      int `json:"scanned"`      // addresses whose scan finished
	Alive        int `json:"alive"`        // answered on a TCP port or SNMP
	Classified   int `json:"classified"`   // got a class
	Unclassified int `json:"unclassified"` // alive but matched no classifier (no CI sent)
	ProbesSent   int `json:"probes_sent"`
	ProbesDone   int `json:"probes_done"`
	// ProbesResent counts probes sent again, under a new id, because no result came
	// before their deadline (no bridge ran them in time: a cut-off site, a dead bridge).
	ProbesResent int `json:"probes_resent,omitempty"`
	// ProbesNotRun counts results saying a bridge took the probe past its deadline and did
	// not run it (code expired: it waited in the site's queue too long); each such probe is
	// sent again like one without a result (and counted in ProbesResent then).
	ProbesNotRun int `json:"probes_not_run,omitempty"`
	// ProbesUnsent counts probes given up before they were sent: their build (host key,
	// credentials, the site's bridges) failed and kept failing; the host's log and the
	// run's errors say why.
	ProbesUnsent int `json:"probes_unsent,omitempty"`
	PayloadsSent int `json:"payloads_sent"`
	CIsSent      int `json:"cis_sent"`
	Relations    int `json:"relations_sent"`
	Ingested     int `json:"payloads_ingested"` // host payloads the CMDB has a receipt for
	CIsCreated   int `json:"cis_created"`
	CIsUpdated   int `json:"cis_updated"`
	CIsUnchanged int `json:"cis_unchanged"`
	Errors       int `json:"errors"`
}

// Run is a discovery run as run_get and runs_ls answer it.
type Run struct {
	ID          string     `json:"id"`
	Site        string     `json:"site"`
	Ranges      []string   `json:"ranges,omitempty"`
	Exclude     []string   `json:"exclude,omitempty"`
	Ports       []int      `json:"ports,omitempty"`
	Credentials []string   `json:"credentials,omitempty"`
	Schedule    string     `json:"schedule,omitempty"`
	State       string     `json:"state"`
	Reason      string     `json:"reason,omitempty"`
	Created     time.Time  `json:"created"`
	Updated     time.Time  `json:"updated"`
	Finished    *time.Time `json:"finished,omitempty"`
	Deadline    time.Time  `json:"deadline"`
	Counters    Counters   `json:"counters"`
	Errors      []string   `json:"errors,omitempty"`
	Log         []string   `json:"log,omitempty"`
	// RelationsSent: the run's relations payload went to the CMDB.
	RelationsSent bool   `json:"relations_sent,omitempty"`
	PendingProbes int    `json:"pending_probes"`
	ReplayOf      string `json:"replay_of,omitempty"` // a replay run: the run it re-derives (outpost replay)
	// TraceID is the OpenTelemetry trace of the run (the request that started it, its
	// probes, their results and the CMDB ingest); empty when tracing was off.
	TraceID string      `json:"trace_id,omitempty"`
	Hosts   []HostBrief `json:"hosts,omitempty"` // run_get without a host
	Host    *Host       `json:"host,omitempty"`  // run_get with a host's address
}

// Final reports whether the run will not change any more.
func (r Run) Final() bool { return Final(r.State) }

// Progress is the share of the scan done, in percent.
func (r Run) Progress() int {
	if r.Final() {
		return 100
	}
	if r.Counters.Addresses <= 0 {
		return 0
	}
	return min(100, r.Counters.Scanned*100/r.Counters.Addresses)
}

// RunListReply is one page of runs, newest first (without logs and errors).
type RunListReply struct {
	Runs       []Run  `json:"runs"`
	NextCursor string `json:"next_cursor"`
}

// HostBrief is one line of a run's host table.
type HostBrief struct {
	IP         string    `json:"ip"`
	Name       string    `json:"name,omitempty"`
	Class      string    `json:"class,omitempty"`
	Stage      string    `json:"stage"`
	ByPorts    bool      `json:"by_ports,omitempty"`
	Credential string    `json:"credential,omitempty"`
	CIs        int       `json:"cis_sent,omitempty"`
	Ingested   *Ingested `json:"cmdb,omitempty"` // what the CMDB made of its payload
}

// Ingested is what the CMDB made of a host's payload.
type Ingested struct {
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
	Conflicts int `json:"conflicts,omitempty"`
	Skipped   int `json:"skipped,omitempty"`
}

// Host is one live address of a run in full: what was tried, what answered, what was sent.
type Host struct {
	IP         string              `json:"ip"`
	Run        string              `json:"run"`
	Stage      string              `json:"stage"`
	Class      string              `json:"class,omitempty"`
	Classifier string              `json:"classifier,omitempty"`
	ByPorts    bool                `json:"by_ports,omitempty"`
	Name       string              `json:"name,omitempty"`
	Attributes map[string]any      `json:"attributes,omitempty"`
	Worked     map[string]string   `json:"credentials_worked,omitempty"` // type → name
	Failed     map[string][]string `json:"credentials_failed,omitempty"`
	CIs        int                 `json:"cis_sent,omitempty"`
	Ingested   *Ingested           `json:"cmdb,omitempty"`
	// Facts are the discovery's notes on the host, made of the probe kinds' results (their
	// types are the kinds' contracts); shown for diagnosis, not an interface to build on.
	Facts json.RawMessage `json:"facts"`
	Log   []HostLog       `json:"log,omitempty"`
	// LLDP lists the neighbours a switch reported (local_port, remote_name, remote_port).
	LLDP []LLDPNeighbour `json:"lldp,omitempty"`
}

// HostFacts is the part of a host's facts every reader shows; the rest is per probe kind.
type HostFacts struct {
	IP         string `json:"ip"`
	Ports      []int  `json:"ports,omitempty"`
	SSHVersion string `json:"ssh_version,omitempty"`
	SSHFailed  bool   `json:"ssh_failed,omitempty"` // every credential was refused
	// SSHHostKey is the host key fingerprint seen (and on record at the hub).
	SSHHostKey string `json:"ssh_host_key,omitempty"`
	// SSHHostKeyChanged says the host presented another key than the one on record.
	SSHHostKeyChanged string `json:"ssh_host_key_changed,omitempty"`
}

// Summary reads the common part of the host's facts (zero when it has none).
func (h *Host) Summary() HostFacts {
	var f HostFacts
	if len(h.Facts) > 0 {
		_ = json.Unmarshal(h.Facts, &f)
	}
	return f
}

// LLDPNeighbour is one neighbour a switch reported over LLDP.
type LLDPNeighbour struct {
	LocalPort  string `json:"local_port"`
	RemoteName string `json:"remote_name"`
	RemotePort string `json:"remote_port"`
	// RemoteChassis (LLDP chassis id, hex or MAC) and RemoteAddress (LLDP management or CDP
	// address) identify the neighbour when names differ (FQDN vs short name).
	RemoteChassis string `json:"remote_chassis,omitempty"`
	RemoteAddress string `json:"remote_address,omitempty"`
	// Protocol is lldp or cdp.
	Protocol string `json:"protocol,omitempty"`
}

// Step is what a probe of a run is for (scan, sweep, classify, explore, identify).
type Step string

// HostLog is one line of a host's log: what was tried and what answered.
type HostLog struct {
	Time       time.Time `json:"time"`
	Step       Step      `json:"step"`
	Kind       string    `json:"kind"`
	Probe      string    `json:"probe,omitempty"`
	Status     string    `json:"status,omitempty"`
	Credential string    `json:"credential,omitempty"`
	Failed     []string  `json:"failed_credentials,omitempty"`
	Error      string    `json:"error,omitempty"`
	Note       string    `json:"note,omitempty"`
	// Bridge is the agent that ran the probe (a site's bridges share its scan chunks).
	Bridge string `json:"bridge,omitempty"`
}

// Schedule is a recurring (cron) or one-off (at) discovery.
type Schedule struct {
	Name        string     `json:"name"`
	Site        string     `json:"site"`
	Ranges      []string   `json:"ranges,omitempty"`
	Ports       []int      `json:"ports,omitempty"`
	Credentials []string   `json:"credentials,omitempty"`
	Cron        string     `json:"cron,omitempty"` // 5 fields, or @hourly, @every 1h…
	At          *time.Time `json:"at,omitempty"`   // one-off
	MaxRunTime  string     `json:"max_run_time,omitempty"`
	Created     time.Time  `json:"created"`
	LastFired   *time.Time `json:"last_fired,omitempty"`
	LastRun     string     `json:"last_run,omitempty"`
	Next        *time.Time `json:"next,omitempty"`
}

// ScheduleReply is the schedule as stored.
type ScheduleReply struct {
	Schedule Schedule `json:"schedule"`
}

// ScheduleListReply is one page of schedules, by name.
type ScheduleListReply struct {
	Schedules  []Schedule `json:"schedules"`
	NextCursor string     `json:"next_cursor"`
}

// Credential is a stored credential as listed: never its secret.
type Credential struct {
	Name     string   `json:"name"`
	Type     string   `json:"type"`
	Site     string   `json:"site"`
	Username string   `json:"username,omitempty"`
	Fields   []string `json:"fields,omitempty"` // names only: values may be secret (priv_password)
	// AllowInsecure lets probes send it over plaintext or unverified TLS (admin only).
	AllowInsecure bool      `json:"allow_insecure,omitempty"`
	Created       time.Time `json:"created"`
}

// CredentialAddRequest stores a credential, encrypted; the secret is write-only.
type CredentialAddRequest struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Site     string            `json:"site"`
	Username string            `json:"username,omitempty"`
	Secret   string            `json:"secret"`
	Fields   map[string]string `json:"fields,omitempty"`
	// AllowInsecure: probes may send this secret over plaintext or unverified TLS. The
	// gateway lets only admins store credentials at all.
	AllowInsecure bool `json:"allow_insecure,omitempty"`
}

// CredentialReply is the credential as listed.
type CredentialReply struct {
	Credential Credential `json:"credential"`
}

// CredentialListReply is one page of credentials, by name.
type CredentialListReply struct {
	Credentials []Credential `json:"credentials"`
	NextCursor  string       `json:"next_cursor"`
}

// SealRequest asks for stored credentials, by name, sealed to a site's bridges for one
// ad-hoc probe (the agents service asks). The clear secret never leaves discovery: what goes
// back is only sealed to the bridges' curve keys and bound to the probe id.
type SealRequest struct {
	Site  string   `json:"site"`
	Kind  string   `json:"kind"`
	Probe string   `json:"probe"`
	Names []string `json:"names"`
	// Target is the probe's target (an address), for ssh_exec's known host key.
	Target string `json:"target,omitempty"`
}

// SealReply carries the sealed credentials in the order asked, and for ssh_exec the host
// key on record for the target (the caller puts it in params.known_host_key).
type SealReply struct {
	Secrets      []envelope.SealedCredential `json:"secrets"`
	KnownHostKey string                      `json:"known_host_key,omitempty"`
}

// HostKey is one known SSH host key (trust on first use).
type HostKey struct {
	Site        string    `json:"site"`
	Address     string    `json:"address"`
	Fingerprint string    `json:"fingerprint"` // SHA256:… as ssh-keygen -l prints it
	Type        string    `json:"type,omitempty"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	// Run (or "adhoc") that recorded it first.
	Run string `json:"run,omitempty"`
}

// HostKeysRequest forgets an address's host key, of one site or ("") of every site.
type HostKeysRequest struct {
	Site    string `json:"site"`
	Address string `json:"address"`
}

// HostKeyListReply is one page of host keys, by site and address.
type HostKeyListReply struct {
	HostKeys   []HostKey `json:"hostkeys"`
	NextCursor string    `json:"next_cursor"`
}

// HostKeyForgetReply lists the records forgotten.
type HostKeyForgetReply struct {
	Forgotten []HostKey `json:"forgotten"`
}

// ClassifiersReply says what the reloaded classifier set holds.
type ClassifiersReply struct {
	Files       []string `json:"files"`
	Classifiers int      `json:"classifiers"`
}

// ReplayRequest replays the stored results of a run through discovery's live pipeline: a new
// run with the original's parameters whose probes are answered from the RESULTS stream
// instead of by bridges (nothing is sent to a site). The classification is today's rules';
// the payloads go to the CMDB unless DryRun, which only lists them in the replay run's log.
type ReplayRequest struct {
	Stream  string `json:"stream"`             // RESULTS: the only stream discovery consumes
	Run     string `json:"run"`                // the run whose results are replayed
	Since   string `json:"since,omitempty"`    // only results stored in the last Since (e.g. 10m)
	FromSeq uint64 `json:"from_seq,omitempty"` // only results from this stream sequence on
	Site    string `json:"site,omitempty"`
	Agent   string `json:"agent,omitempty"`
	Subject string `json:"subject,omitempty"` // a subject pattern inside result.discovery.>
	DryRun  bool   `json:"dry_run,omitempty"`
}

// ReplayReply names the replay run (follow it with run_get) and what was found to replay.
type ReplayReply struct {
	Run     string `json:"run"`     // the replay run
	Of      string `json:"of"`      // the run replayed
	Results int    `json:"results"` // result chunks of the run read from the stream
	Probes  int    `json:"probes"`  // probes of the run on record (the probe ledger)
	DryRun  bool   `json:"dry_run,omitempty"`
}
