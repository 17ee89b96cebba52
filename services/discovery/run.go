package discovery

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
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
type Step string

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
	PayloadsSent int `json:"payloads_sent"`
	CIsSent      int `json:"cis_sent"`
	Relations    int `json:"relations_sent"`
	Ingested     int `json:"payloads_ingested"` // host payloads the CMDB has a receipt for
	CIsCreated   int `json:"cis_created"`
	CIsUpdated   int `json:"cis_updated"`
	CIsUnchanged int `json:"cis_unchanged"`
	Errors       int `json:"errors"`
}

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
}

// RunRecord is a discovery run as kept in KV `runs` (key = id).
type RunRecord struct {
	ID          string                   `json:"id"`
	Site        string                   `json:"site"`
	Ranges      []string                 `json:"ranges,omitempty"`
	Exclude     []string                 `json:"exclude,omitempty"`
	Ports       []int                    `json:"ports,omitempty"`
	Credentials []string                 `json:"credentials,omitempty"`
	Schedule    string                   `json:"schedule,omitempty"`
	State       string                   `json:"state"`
	Reason      string                   `json:"reason,omitempty"`
	Created     time.Time                `json:"created"`
	Updated     time.Time                `json:"updated"`
	Finished    *time.Time               `json:"finished,omitempty"`
	Deadline    time.Time                `json:"deadline"`
	Counters    Counters                 `json:"counters"`
	Errors      []string                 `json:"errors,omitempty"`
	Log         []string                 `json:"log,omitempty"`
	Pending     map[string]*pendingProbe `json:"pending,omitempty"`
	Relations   bool                     `json:"relations_sent,omitempty"`
}

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
}

// Ingested is what the CMDB made of a host's payload.
type Ingested struct {
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
	Conflicts int `json:"conflicts,omitempty"`
	Skipped   int `json:"skipped,omitempty"`
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
type RunView struct {
	RunRecord
	PendingProbes int         `json:"pending_probes"`
	Hosts         []HostBrief `json:"hosts,omitempty"`
	Host          *Host       `json:"host,omitempty"`
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

func (r *RunRecord) view() RunView {
	v := RunView{RunRecord: *r, PendingProbes: len(r.Pending)}
	v.RunRecord.Pending = nil
	v.RunRecord.Log = slices.Clone(r.Log)
	return v
}

func cloneJSON[T any](v T) T {
	b, _ := json.Marshal(v)
	var out T
	_ = json.Unmarshal(b, &out)
	return out
}

var _ = envelope.StatusOK
