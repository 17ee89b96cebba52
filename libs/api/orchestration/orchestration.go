// Package orchestration is the contract of the orchestration service (svc.orchestration.*):
// workflow definitions as users write them (YAML), the runs the service keeps, and one
// request and one response type per endpoint. The service, the gateway and the CLI import
// it; nobody mirrors these types.
package orchestration

import (
	"encoding/json"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/page"
)

// Service is the name on the bus: svc.orchestration.<op>, result.orchestration.>.
const Service = "orchestration"

// Operations of svc.orchestration.<op>.
var (
	Add        = bus.Op[AddRequest, AddResponse]{Service: Service, Name: "workflow_add"}
	List       = bus.Op[ListRequest, ListResponse]{Service: Service, Name: "workflow_ls"}
	Show       = bus.Op[ShowRequest, Definition]{Service: Service, Name: "workflow_show"}
	RunStart   = bus.Op[RunRequest, Run]{Service: Service, Name: "run_start"}
	RunList    = bus.Op[RunsRequest, RunsResponse]{Service: Service, Name: "runs_ls"}
	RunGet     = bus.Op[RunIDRequest, Run]{Service: Service, Name: "run_get"}
	RunCancel  = bus.Op[RunIDRequest, Run]{Service: Service, Name: "run_cancel"}
	RunApprove = bus.Op[ApproveRequest, Run]{Service: Service, Name: "run_approve"}
	RunEvents  = bus.Op[RunIDRequest, EventsResponse]{Service: Service, Name: "run_events"}
	RunOutput  = bus.Op[OutputRequest, OutputResponse]{Service: Service, Name: "run_output"}
	// Replay re-delivers stored CMDB change events (the CHANGES stream) to the cmdb_change
	// triggers (outpost replay --stream CHANGES --to orchestration).
	Replay = bus.Op[ReplayRequest, ReplayReply]{Service: Service, Name: "replay"}
)

// Ops lists every operation of the service.
func Ops() []bus.OpSpec {
	return []bus.OpSpec{Add.Spec(), List.Spec(), Show.Spec(), RunStart.Spec(), RunList.Spec(), RunGet.Spec(),
		RunCancel.Spec(), RunApprove.Spec(), RunEvents.Spec(), RunOutput.Spec(), Replay.Spec()}
}

// Built-in step kinds; every other kind is a probe kind (libs/probes/catalog) run on the
// bridges of the step's site.
const (
	KindApproval   = "approval"
	KindWait       = "wait"
	KindCMDBUpdate = "cmdb_update"
	KindNotify     = "notify"
	// KindWorkflow runs another workflow (params: workflow, version, inputs) as a child
	// run; the step's output is {run, outputs} of the child, and canceling the parent (or
	// the step timing out) cancels the child.
	KindWorkflow = "workflow"
)

// Workflow is a definition as written in YAML. Adding one with an existing name makes a
// new version; runs keep the version they started with.
type Workflow struct {
	Name        string           `json:"name" yaml:"name"`
	Description string           `json:"description,omitempty" yaml:"description,omitempty"`
	Inputs      map[string]Input `json:"inputs,omitempty" yaml:"inputs,omitempty"`
	Steps       []Step           `json:"steps" yaml:"steps"`
	// Outputs are the run's outputs, expressions over inputs and steps evaluated when it
	// completes (Run.Outputs); a workflow step's output carries its child's.
	Outputs map[string]string `json:"outputs,omitempty" yaml:"outputs,omitempty"`
	// On are the run's triggers besides CLI/API/console: a cron schedule, CMDB changes,
	// correlation alerts.
	On *Triggers `json:"on,omitempty" yaml:"on,omitempty"`
}

// Triggers start runs by themselves. A run started by one records it (Run.Trigger).
// Correlation alerts start runs through run_start (a remediation action gives its alert as
// the run's Trigger), not here.
type Triggers struct {
	// Cron is a 5-field cron schedule (UTC), e.g. "*/15 * * * *": one run per slot, across
	// replicas (a KV claim per slot).
	Cron string `json:"cron,omitempty" yaml:"cron,omitempty"`
	// CMDBChange starts a run for each CMDB change event that matches and happened after
	// the definition's version was added.
	CMDBChange *CMDBChangeTrigger `json:"cmdb_change,omitempty" yaml:"cmdb_change,omitempty"`
	// Inputs are the run's inputs when a trigger starts it; expressions may read the
	// change as event (event.ci, event.class, event.op, event.attributes, event.source) and
	// the slot as event.slot.
	Inputs map[string]string `json:"inputs,omitempty" yaml:"inputs,omitempty"`
}

// CMDBChangeTrigger matches CMDB change events (cmdb.changed.<class>): Class is required;
// Attribute, when given, must be among the attributes the change touched; Op, when given,
// is created, updated or stale.
type CMDBChangeTrigger struct {
	Class     string `json:"class" yaml:"class"`
	Attribute string `json:"attribute,omitempty" yaml:"attribute,omitempty"`
	Op        string `json:"op,omitempty" yaml:"op,omitempty"`
}

// Trigger is what started a run: api (a CLI/API/console call), cron (Slot), cmdb_change
// (Event: the change event's id), alert (Event: the correlation alert's id, given by the
// remediation action that called run_start), workflow (Event: the parent run).
type Trigger struct {
	Kind  string    `json:"kind"`
	Slot  time.Time `json:"slot,omitzero"`
	Event string    `json:"event,omitempty"`
	// Detail is a short description of what fired (the change, the alert).
	Detail string `json:"detail,omitempty"`
}

// RunLink points a child run (of a workflow step) at the step of its parent run.
type RunLink struct {
	Run     string `json:"run"`
	Step    string `json:"step"`
	Attempt string `json:"attempt"` // the parent attempt's key
}

// Input declares one input of a workflow.
type Input struct {
	Type     string `json:"type,omitempty" yaml:"type,omitempty"` // string (default) | number | bool
	Required bool   `json:"required,omitempty" yaml:"required,omitempty"`
	Default  any    `json:"default,omitempty" yaml:"default,omitempty"`
	Doc      string `json:"description,omitempty" yaml:"description,omitempty"`
}

// Step is one node of the workflow's DAG. Strings may hold ${{ expr }} expressions
// (expr-lang) over inputs, steps.<id>.output, steps.<id>.state and run.
type Step struct {
	ID    string   `json:"id" yaml:"id"`
	Kind  string   `json:"kind" yaml:"kind"`
	Needs []string `json:"needs,omitempty" yaml:"needs,omitempty"`
	// If skips the step when it evaluates to false.
	If string `json:"if,omitempty" yaml:"if,omitempty"`
	// ForEach runs the step once per item of a list (an expression); each run sees item
	// and index, at most Concurrency (default 10) at a time. The step's output is the list
	// of the items' outputs; it fails when an item failed (on_failure: continue: it
	// succeeds with null outputs for the failed items).
	ForEach     string `json:"for_each,omitempty" yaml:"for_each,omitempty"`
	Concurrency int    `json:"concurrency,omitempty" yaml:"concurrency,omitempty"`
	// Site, SiteOf, Target, Credentials, Priority: probe kinds only. SiteOf picks the site
	// whose ranges hold an address (the most specific range) instead of naming it.
	Site        string   `json:"site,omitempty" yaml:"site,omitempty"`
	SiteOf      string   `json:"site_of,omitempty" yaml:"site_of,omitempty"`
	Target      string   `json:"target,omitempty" yaml:"target,omitempty"`
	Credentials []string `json:"credentials,omitempty" yaml:"credentials,omitempty"`
	Priority    string   `json:"priority,omitempty" yaml:"priority,omitempty"`
	// Params are the probe kind's params, or the built-in's (wait: duration; cmdb_update:
	// ci, set; notify: url, body, headers).
	Params map[string]any `json:"params,omitempty" yaml:"params,omitempty"`
	// Timeout bounds one attempt (a Go duration); default per kind.
	Timeout string `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	Retry   *Retry `json:"retry,omitempty" yaml:"retry,omitempty"`
	// OnFailure: fail (default) fails the run; continue lets dependent steps run; a list of
	// compensating steps run, one after another, once the step failed — then the run fails.
	OnFailure OnFailure `json:"on_failure,omitzero" yaml:"on_failure,omitempty"`
}

// Retry is a step's retry policy: up to MaxAttempts attempts in all, waiting Initial
// before the second, then the same (fixed) or twice as long each time (exponential, capped
// at Max). A Retry-After of an http_request answer (429, 503) is honoured when longer.
type Retry struct {
	MaxAttempts int    `json:"max_attempts" yaml:"max_attempts"`
	Backoff     string `json:"backoff,omitempty" yaml:"backoff,omitempty"` // fixed | exponential
	Initial     string `json:"initial,omitempty" yaml:"initial,omitempty"`
	Max         string `json:"max,omitempty" yaml:"max,omitempty"`
}

// Run states.
const (
	RunRunning   = "running"
	RunCompleted = "completed"
	RunFailed    = "failed"
	RunCanceled  = "canceled"
)

// Step states.
const (
	StepPending   = "pending"
	StepRunning   = "running"  // an attempt is in flight
	StepRetrying  = "retrying" // waiting for the next attempt (NextAt)
	StepWaiting   = "waiting"  // approval or wait
	StepSucceeded = "succeeded"
	StepFailed    = "failed"
	StepSkipped   = "skipped"
	StepCanceled  = "canceled"
)

// Run is one execution of one version of a workflow: the whole state, as kept in KV.
type Run struct {
	ID string `json:"id"`
	// Trigger is what started the run; Parent the workflow step whose child it is.
	Trigger *Trigger `json:"trigger,omitempty"`
	Parent  *RunLink `json:"parent,omitempty"`
	// Outputs are the definition's outputs, evaluated when the run completed.
	Outputs  map[string]any `json:"outputs,omitempty"`
	Workflow string         `json:"workflow"`
	Version  int            `json:"version"`
	State    string         `json:"state"`
	Reason   string         `json:"reason,omitempty"`
	Inputs   map[string]any `json:"inputs"`
	Steps    []StepRun      `json:"steps"`
	Actor    string         `json:"actor,omitempty"`
	Created  time.Time      `json:"created"`
	Updated  time.Time      `json:"updated"`
	Finished *time.Time     `json:"finished,omitempty"`
	// CancelRequested is set by cancel; the run's owner carries it out.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Seq is the stream sequence of the last event of the run's history (wf.run.<id>.events)
	// this state includes: a snapshot plus the events after Seq is the run now.
	Seq uint64 `json:"seq,omitempty"`
}

// Done reports whether the run reached a final state.
func (r *Run) Done() bool {
	return r.State == RunCompleted || r.State == RunFailed || r.State == RunCanceled
}

// Step returns the run's step id (nil when there is none).
func (r *Run) Step(id string) *StepRun {
	for i := range r.Steps {
		if r.Steps[i].ID == id {
			return &r.Steps[i]
		}
	}
	return nil
}

// StepRun is what happened to one step of a run.
type StepRun struct {
	ID       string          `json:"id"`
	Kind     string          `json:"kind"`
	State    string          `json:"state"`
	Reason   string          `json:"reason,omitempty"`
	Output   json.RawMessage `json:"output,omitempty"`
	Attempts []Attempt       `json:"attempts,omitempty"`
	// NextAt is when the next attempt starts (retrying) or a wait ends (waiting).
	NextAt   *time.Time `json:"next_at,omitempty"`
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	// Approval is the decision on an approval step.
	Approval *Approval `json:"approval,omitempty"`
	// Items is how many items a for_each step expanded to; each is a step of its own,
	// <id>.<index>, with Parent, Index and Item set.
	Items  int    `json:"items,omitempty"`
	Parent string `json:"parent,omitempty"`
	Index  int    `json:"index,omitempty"`
	Item   any    `json:"item,omitempty"`
	// Compensates is the failed step a compensating step (<step>:<id>) undoes.
	Compensates string `json:"compensates,omitempty"`
}

// Attempt is one try of a step. Key is its idempotency key (run, step, attempt): a probe
// attempt's probe id, the Idempotency-Key header of a notify; an attempt is dispatched at
// most once, and a result for any other key is not taken for it.
type Attempt struct {
	N        int        `json:"n"`
	Key      string     `json:"key"`
	State    string     `json:"state"` // running | succeeded | failed | timeout
	Error    string     `json:"error,omitempty"`
	Agent    string     `json:"agent,omitempty"`
	Started  time.Time  `json:"started"`
	Deadline *time.Time `json:"deadline,omitempty"`
	// Sent is when the probe of the attempt was accepted by the bus. An attempt recorded but
	// not sent (the service stopped in between) is sent on resume with the same probe id;
	// one sent is only awaited.
	Sent     *time.Time `json:"sent,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	// Child is the run a workflow step's attempt started, recorded before it starts.
	Child string `json:"child,omitempty"`
}

// Event is one entry of a run's history, the stream of events its state is folded from:
// run.started carries the whole run, a step's event its new state, a run's event the run's
// new state (its steps excepted). Type says what happened (run.started, attempt.started,
// attempt.sent, step.succeeded, run.completed, ...).
type Event struct {
	Type    string    `json:"type"`
	Time    time.Time `json:"time"`
	Step    string    `json:"step,omitempty"`
	Attempt int       `json:"attempt,omitempty"`
	// Seq is the event's stream sequence (set when read back; events of one save share it).
	Seq  uint64   `json:"seq,omitempty"`
	Run  *Run     `json:"run,omitempty"`
	Into *StepRun `json:"into,omitempty"`
}

// EventsResponse (run_events) is a run's whole history, oldest first.
type EventsResponse struct {
	Events []Event `json:"events"`
}

// OutputRef stands for an output too large to keep in a run (over the service's inline
// threshold): the output is an object of the JetStream object store, fetched with
// run_output (`outpost workflow runs show RUN --output STEP`). Expressions see the output
// itself.
type OutputRef struct {
	Ref    string `json:"$ref"` // <bucket>/<object>
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// OutputRequest (run_output) reads a step's output from Offset; a reply carries at most
// OutputPage bytes (the bus carries 1 MiB a message): ask again from Next until Next is 0.
type OutputRequest struct {
	Run    string `json:"run"`
	Step   string `json:"step"`
	Offset int64  `json:"offset,omitempty"`
}

// OutputPage is the most bytes of an output one run_output reply carries.
const OutputPage = 512 << 10

// OutputResponse is a page of a step's output (JSON bytes).
type OutputResponse struct {
	Step   string `json:"step"`
	Size   int64  `json:"size"`
	Offset int64  `json:"offset"`
	Data   []byte `json:"data"`
	Next   int64  `json:"next,omitempty"`
	// Ref names the object when the output is kept by reference.
	Ref string `json:"ref,omitempty"`
}

// Approval is an operator's decision on an approval step.
type Approval struct {
	Approved bool      `json:"approved"`
	By       string    `json:"by,omitempty"`
	Comment  string    `json:"comment,omitempty"`
	Time     time.Time `json:"time"`
}

// AddRequest (workflow_add) adds a definition; File names it in errors.
type AddRequest struct {
	File string `json:"file,omitempty"`
	YAML string `json:"yaml"`
}

// AddResponse names the version made.
type AddResponse struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	Steps   int    `json:"steps"`
}

// ListRequest (workflow_ls) pages through definitions by name.
type ListRequest = page.Request

// WorkflowSummary is one definition in a list: its latest version.
type WorkflowSummary struct {
	Name        string    `json:"name"`
	Version     int       `json:"version"`
	Description string    `json:"description,omitempty"`
	Steps       int       `json:"steps"`
	Added       time.Time `json:"added"`
}

// ListResponse is one page of definitions.
type ListResponse struct {
	Workflows  []WorkflowSummary `json:"workflows"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

// ShowRequest (workflow_show) names a definition; Version 0 is the latest.
type ShowRequest struct {
	Name    string `json:"name"`
	Version int    `json:"version,omitempty"`
}

// Definition is one stored version of a workflow.
type Definition struct {
	Name     string    `json:"name"`
	Version  int       `json:"version"`
	Versions int       `json:"versions"`
	Added    time.Time `json:"added"`
	Workflow Workflow  `json:"workflow"`
	YAML     string    `json:"yaml"`
}

// ShowResponse is a definition.
type ShowResponse = Definition

// RunRequest (run_start) starts a run of the named workflow.
type RunRequest struct {
	Name string `json:"name"`
	RunOptions
}

// RunOptions are what a run starts with: the workflow's latest version (or Version), and
// its inputs, typed by the definition (strings are converted: "3" to a number input). They
// are the body of POST /api/v1/workflows/{name}/runs.
type RunOptions struct {
	Version int            `json:"version,omitempty"`
	Inputs  map[string]any `json:"inputs,omitempty"`
	// Trigger says what starts the run when it is not an operator (a correlation
	// remediation action gives {kind: alert, event: <alert id>}); default api.
	Trigger *Trigger `json:"trigger,omitempty"`
	// IdempotencyKey makes a start safe to repeat: a second start with the same key (within
	// the service's IdempotencyTTL, 7 days by default) returns the run the first started
	// instead of starting another. A caller that may retry or crash between starting a run
	// and recording it gives one (a remediation: alert:<alert id>:<rule>). At most 256 bytes.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// RunResponse is the run as started.
type RunResponse = Run

// RunsRequest (runs_ls) pages through runs, newest first.
type RunsRequest = page.Request

// RunsResponse is one page of runs.
type RunsResponse struct {
	Runs       []Run  `json:"runs"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// RunIDRequest names a run (run_get, run_cancel).
type RunIDRequest struct {
	ID string `json:"id"`
}

// ApproveRequest (run_approve) records a decision on an approval step of a run. By is who
// decided: the gateway sets it to the calling token's name.
type ApproveRequest struct {
	Run  string `json:"run"`
	Step string `json:"step"`
	Decision
	By string `json:"by,omitempty"`
}

// Decision approves, or with Reject refuses, an approval step; it is the body of
// POST /api/v1/workflow-runs/{id}/steps/{step}/approve.
type Decision struct {
	Reject  bool   `json:"reject,omitempty"`
	Comment string `json:"comment,omitempty"`
}

// ReplayRequest re-delivers the CMDB change events the CHANGES stream kept to the latest
// definitions' cmdb_change triggers, through the live handler: a trigger's run id derives
// from the change event's id, so a run a change started already (live or by an earlier
// replay) is not started again. Since/Until and FromSeq/ToSeq bound what is read; a reply
// covers at most Limit events and says where to go on (Next).
type ReplayRequest struct {
	Stream  string `json:"stream,omitempty"`   // CHANGES (the default): the only stream orchestration replays
	Since   string `json:"since,omitempty"`    // changes stored in the last Since (10m) or from an RFC 3339 time
	Until   string `json:"until,omitempty"`    // changes stored before Until ago (5m) or before an RFC 3339 time
	FromSeq uint64 `json:"from_seq,omitempty"` // changes from this stream sequence on
	ToSeq   uint64 `json:"to_seq,omitempty"`   // changes up to this stream sequence
	Class   string `json:"class,omitempty"`    // only changes of this CI class
	Limit   int    `json:"limit,omitempty"`    // events read per request (default and cap: ReplayLimit)
	DryRun  bool   `json:"dry_run,omitempty"`  // start nothing: say which runs would start
}

// ReplayLimit is the most change events one replay request reads; the CLI goes on from Next.
const ReplayLimit = 1000

// ReplayReply says what one replay request read and did.
type ReplayReply struct {
	Changes  int    `json:"changes"`             // change events read
	FirstSeq uint64 `json:"first_seq,omitempty"` // stream sequences of the first and last read
	LastSeq  uint64 `json:"last_seq,omitempty"`
	// Next, when not 0, is the sequence to go on from (from_seq): the request stopped at
	// its limit before the end of the range.
	Next    uint64         `json:"next,omitempty"`
	Matched int            `json:"matched"` // firings: a change that matches a trigger
	Started int            `json:"started"` // runs started (dry run: that would start)
	Existed int            `json:"existed"` // runs a change had started already: not started again
	Refused int            `json:"refused"` // firings the definition refused (bad inputs)
	Firings []ReplayFiring `json:"firings,omitempty"`
	DryRun  bool           `json:"dry_run,omitempty"`
}

// ReplayFiring is one change × trigger of a replay: the run it started, had started or
// would start.
type ReplayFiring struct {
	Seq      uint64 `json:"seq"`      // of the change in CHANGES
	Change   string `json:"change"`   // the change event's id
	Workflow string `json:"workflow"` // name and version of the triggered definition
	Version  int    `json:"version"`
	Run      string `json:"run"`     // the run's id (derived from the change's)
	Outcome  string `json:"outcome"` // started, existed, would_start, refused
	Reason   string `json:"reason,omitempty"`
}
