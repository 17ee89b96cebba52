package discovery

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/telemetry"
)

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

func terminalState(s string) bool {
	return s == StateCompleted || s == StateFailed || s == StateCanceled
}

// Step is what a probe of a run is for; a host's log names the step of each line.
type Step = discoveryapi.Step

// Steps of a run, in the order a host meets them (stage.go).
const (
	StepScan     Step = "scan"     // tcp_scan chunks over the ranges
	StepSweep    Step = "sweep"    // SNMP to every address of the ranges
	StepClassify Step = "classify" // probes chosen by what answered, then the classifiers
	StepExplore  Step = "explore"  // probes of the class the host was given; LLDP relations
	StepIdentify Step = "identify" // the host's payload to the CMDB, and its receipt
)

// Host stages.
const (
	stageNew      = "new"      // found; classify probes not sent yet
	stageClassify = "classify" // classify probes in flight
	stageExplore  = "explore"  // classified; explore probes in flight
	stageDone     = "done"     // payload sent (or nothing to send)
)

// Counters, HostLog and Ingested are parts of a run as the contract shows them
// (libs/api/discovery).
type (
	Counters      = discoveryapi.Counters
	LLDPNeighbour = discoveryapi.LLDPNeighbour
	HostLog       = discoveryapi.HostLog
	Ingested      = discoveryapi.Ingested
)

// pendingProbe is a probe whose final result is awaited.
type pendingProbe struct {
	IP       string    `json:"ip,omitempty"`
	Step     Step      `json:"step"` // scan, sweep, classify, explore
	Kind     string    `json:"kind"`
	Name     string    `json:"name,omitempty"`
	Port     int       `json:"port,omitempty"`
	Addrs    int       `json:"addrs,omitempty"`   // scan: addresses covered
	Targets  []string  `json:"targets,omitempty"` // scan: to send it again after a restart
	Ports    []int     `json:"ports,omitempty"`
	Cred     string    `json:"cred,omitempty"` // credential type carried
	Deadline time.Time `json:"deadline"`
	// Chunks are the result seqs applied; Final is the final chunk's seq + 1 once seen.
	// Chunks may be handled out of order: the probe is done when all of them are in.
	Chunks map[int]bool `json:"chunks,omitempty"`
	Final  int          `json:"final,omitempty"`
	// Attempt is the execution whose chunks are counted (envelope.Result.Attempt).
	Attempt int `json:"attempt,omitempty"`
	// Resends counts the sends before this one that passed their deadline without a result
	// (stage.go, expire): this probe replaces them, with a timeout doubled per resend.
	Resends int `json:"resends,omitempty"`
	// NotRun is set when a bridge answered that the probe's deadline passed before it
	// started (code expired): no answer about the target, so expire sends it again at once
	// like a probe that got no result (it says which bridge and why).
	NotRun string `json:"not_run,omitempty"`
	// Unsent says why the probe is pending but not built nor sent yet: the turn's build
	// budget was spent, or a step of its build failed transiently (issue.go). Tries counts
	// the turns its build failed; Retry is when it is tried again.
	Unsent string    `json:"unsent,omitempty"`
	Tries  int       `json:"tries,omitempty"`
	Retry  time.Time `json:"retry,omitzero"`
}

// group is the KV key suffix (under the run's id) the probe is kept in: its host for
// classify and explore, its chunk for a scan, its /24 for the SNMP sweep. A group's value
// stays small however large the range (pending.go).
func (p *pendingProbe) group() string {
	switch {
	case p.Step == StepScan && len(p.Targets) > 0:
		return "scan." + keySafe(p.Targets[0])
	case p.Step == StepSweep:
		ip := p.IP
		if i := strings.LastIndexByte(ip, '.'); i > 0 && !strings.Contains(ip, ":") {
			ip = ip[:i]
		}
		return "sweep." + keySafe(ip)
	case p.IP != "":
		return "host." + keySafe(p.IP)
	}
	return "run"
}

// RunRecord is a discovery run as kept in KV `runs` (key = id).
type RunRecord struct {
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
	Relations   bool       `json:"relations_sent,omitempty"`
	// ReplayOf is the run a replay run re-derives from its stored results (replay.go).
	ReplayOf string `json:"replay_of,omitempty"`
	// Fence is the lease token of the replica that wrote the record (libs/lease.Store).
	Fence uint64 `json:"fence,omitempty"`
	// TraceParent is the trace context of the request that started the run: its probes,
	// sent on later turns, join that trace (`outpost runs show RUN --trace`).
	TraceParent string `json:"traceparent,omitempty"`
	// SweepWindow is how many SNMP sweep probes the run keeps out at once (Config
	// SweepInFlight per scanning bridge, fixed at its start; 0: no bound, a record of before).
	SweepWindow int `json:"sweep_window,omitempty"`
	// Pending are the probes whose final result is awaited. They are not part of the
	// record in KV (a /16 with the SNMP sweep would be 11 MiB): they live in KVPending, by
	// group, written before they are published.
	Pending map[string]*pendingProbe `json:"-"`
	// OldPending is where records written before KVPending kept them: read once on resume.
	OldPending map[string]*pendingProbe `json:"pending,omitempty"`
}

// Host is one live address of a run (KV discovery_hosts, key <run>.<ip>).
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
	Ingested   *Ingested           `json:"cmdb,omitempty"` // the CMDB's receipt for the payload
	Facts      Facts               `json:"facts"`
	Log        []HostLog           `json:"log,omitempty"`
	Done       map[string]bool     `json:"done,omitempty"` // probe ids whose final result was applied
	LLDP       []LLDPNeighbour     `json:"lldp,omitempty"`
	Fence      uint64              `json:"fence,omitempty"` // lease token of the writer
	// Trace is the trace context of the last result applied to the host: its payload goes
	// to the CMDB as that result's descendant (bridge → discovery → cmdb in one trace).
	Trace string `json:"trace,omitempty"`
}

// logf adds a line to the host's log; e.Time is the caller's clock reading (a turn's now).
func (h *Host) logf(e HostLog) {
	if len(h.Log) < 200 {
		h.Log = append(h.Log, e)
	}
}

func (r *RunRecord) logf(at time.Time, s string) {
	if len(r.Log) < 500 {
		r.Log = append(r.Log, at.UTC().Format(time.RFC3339)+" "+s)
	}
}

func (r *RunRecord) errorf(s string) {
	r.Counters.Errors++
	if len(r.Errors) < 200 {
		r.Errors = append(r.Errors, s)
	}
}

// pendingFor counts the pending probes of a step (any step when empty) and ip (any when
// empty).
func (r *RunRecord) pendingFor(step Step, ip string) int {
	n := 0
	for _, p := range r.Pending {
		if (step == "" || p.Step == step) && (ip == "" || p.IP == ip) {
			n++
		}
	}
	return n
}

// RunView is run_get's answer: the run without its pending table, and its hosts.
type RunView = discoveryapi.Run

// HostBrief is one line of a run's host table.
type HostBrief = discoveryapi.HostBrief

func (r *RunRecord) view() RunView {
	return RunView{ID: r.ID, Site: r.Site, Ranges: r.Ranges, Exclude: r.Exclude, Ports: r.Ports, Credentials: r.Credentials,
		Schedule: r.Schedule, State: r.State, Reason: r.Reason, Created: r.Created, Updated: r.Updated, Finished: r.Finished,
		Deadline: r.Deadline, Counters: r.Counters, Errors: r.Errors, Log: slices.Clone(r.Log), RelationsSent: r.Relations,
		PendingProbes: len(r.Pending), TraceID: telemetry.TraceID(r.TraceParent), ReplayOf: r.ReplayOf}
}

// view is the host as run_get shows it: without the probes applied.
func (h *Host) view() *discoveryapi.Host {
	facts, _ := json.Marshal(h.Facts)
	return &discoveryapi.Host{IP: h.IP, Run: h.Run, Stage: h.Stage, Class: h.Class, Classifier: h.Classifier, ByPorts: h.ByPorts,
		Name: h.Name, Attributes: h.Attributes, Worked: h.Worked, Failed: h.Failed, CIs: h.CIs, Ingested: h.Ingested,
		Facts: facts, Log: h.Log, LLDP: h.LLDP}
}

func cloneJSON[T any](v T) T {
	b, _ := json.Marshal(v)
	var out T
	_ = json.Unmarshal(b, &out)
	return out
}

var _ = envelope.StatusOK
