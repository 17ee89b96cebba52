package orchestration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
)

// maxDefinition bounds a definition's YAML.
const maxDefinition = 256 << 10

// endpoints serves the contract's ops (libs/api/orchestration). Runs started by run_start
// belong to ctx, the service's, and are awaited with wg.
func (s *service) endpoints(ctx context.Context, wg *sync.WaitGroup) map[string]bus.Endpoint {
	return map[string]bus.Endpoint{
		api.Add.Name:  api.Add.Handle(s.add),
		api.List.Name: api.List.Handle(s.list),
		api.Show.Name: api.Show.Handle(func(ctx context.Context, r api.ShowRequest) (api.Definition, error) {
			if !bus.ValidName(r.Name) {
				return api.Definition{}, bus.Errorf(400, "name %q is not a workflow name", r.Name)
			}
			return s.definition(ctx, r.Name, r.Version)
		}),
		// a run belongs to the service's context, not to the request that started it; starts
		// are served many at once, their first records sharing the journal's batches
		api.RunStart.Name: func() bus.Endpoint {
			ep := api.RunStart.Handle(func(rctx context.Context, r api.RunRequest) (api.Run, error) {
				return s.startRun(rctx, ctx, wg, r)
			})
			ep.Concurrency = 64
			return ep
		}(),
		api.RunList.Name: api.RunList.Handle(s.listRuns),
		api.RunGet.Name: api.RunGet.Handle(func(ctx context.Context, r api.RunIDRequest) (api.Run, error) {
			return s.getRun(ctx, r.ID)
		}),
		api.RunCancel.Name: api.RunCancel.Handle(func(ctx context.Context, r api.RunIDRequest) (api.Run, error) {
			return s.cancel(ctx, r.ID)
		}),
		api.RunApprove.Name: api.RunApprove.Handle(s.approve),
		api.RunOutput.Name:  api.RunOutput.Handle(s.output),
		api.Replay.Name: api.Replay.Handle(func(rctx context.Context, r api.ReplayRequest) (api.ReplayReply, error) {
			return s.replay(rctx, ctx, wg, r)
		}),
		api.RunEvents.Name: api.RunEvents.Handle(func(ctx context.Context, r api.RunIDRequest) (api.EventsResponse, error) {
			if _, err := s.getRun(ctx, r.ID); err != nil {
				return api.EventsResponse{}, err
			}
			evs, _, err := s.history(ctx, r.ID, 0)
			if evs == nil {
				evs = []api.Event{}
			}
			return api.EventsResponse{Events: evs}, err
		}),
	}
}

func defKey(name string, version int) string { return fmt.Sprintf("%s.%06d", name, version) }

// add validates a definition and stores it as the name's next version.
func (s *service) add(ctx context.Context, r api.AddRequest) (api.AddResponse, error) {
	if len(r.YAML) > maxDefinition {
		return api.AddResponse{}, bus.Errorf(400, "%s: definition of %d bytes is over %d", r.File, len(r.YAML), maxDefinition)
	}
	file := r.File
	if file == "" {
		file = "definition"
	}
	wf, err := ParseDefinition(file, []byte(r.YAML))
	if err != nil {
		return api.AddResponse{}, bus.Errorf(400, "%v", err)
	}
	for range 5 { // two adds of one name race for the version: the loser takes the next
		latest, err := s.latestVersion(ctx, wf.Name)
		if err != nil {
			return api.AddResponse{}, err
		}
		d := api.Definition{Name: wf.Name, Version: latest + 1, Added: s.now(), Workflow: wf.Workflow, YAML: r.YAML}
		b, _ := json.Marshal(d)
		if _, err := s.kvDefs.Create(ctx, defKey(d.Name, d.Version), b); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			return api.AddResponse{}, err
		}
		s.defs.saw(d.Name, d.Version)
		s.log.Info("workflow added", "workflow", d.Name, "version", d.Version, "steps", len(wf.Steps))
		return api.AddResponse{Name: d.Name, Version: d.Version, Steps: len(wf.Steps)}, nil
	}
	return api.AddResponse{}, bus.Errorf(409, "workflow %s: too many versions added at once; try again", wf.Name)
}

// versions lists the stored versions of every definition (or of one name).
func (s *service) versions(ctx context.Context, name string) (map[string][]int, error) {
	filter := ">"
	if name != "" {
		filter = name + ".*"
	}
	keys, err := s.kvDefs.ListKeysFiltered(ctx, filter)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return map[string][]int{}, nil
		}
		return nil, err
	}
	out := map[string][]int{}
	for k := range keys.Keys() {
		n, v, ok := strings.Cut(k, ".")
		if i, err := strconv.Atoi(v); ok && err == nil {
			out[n] = append(out[n], i)
		}
	}
	for n := range out {
		slices.Sort(out[n])
	}
	return out, nil
}

func (s *service) latestVersion(ctx context.Context, name string) (int, error) {
	vs, err := s.versions(ctx, name)
	if err != nil {
		return 0, err
	}
	if l := vs[name]; len(l) > 0 {
		return l[len(l)-1], nil
	}
	return 0, nil
}

// definition returns one version of a definition (0: the latest).
func (s *service) definition(ctx context.Context, name string, version int) (api.Definition, error) {
	vs, err := s.versions(ctx, name)
	if err != nil {
		return api.Definition{}, err
	}
	l := vs[name]
	if len(l) == 0 {
		return api.Definition{}, bus.Errorf(404, "no workflow %q (`outpost workflow ls`; add one with `outpost workflow add FILE`)", name)
	}
	if version == 0 {
		version = l[len(l)-1]
	}
	e, err := s.kvDefs.Get(ctx, defKey(name, version))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return api.Definition{}, bus.Errorf(404, "workflow %s has no version %d (versions 1 to %d)", name, version, l[len(l)-1])
		}
		return api.Definition{}, err
	}
	var d api.Definition
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return api.Definition{}, fmt.Errorf("workflow %s v%d: %w", name, version, err)
	}
	d.Versions = len(l)
	return d, nil
}

func (s *service) list(ctx context.Context, r api.ListRequest) (api.ListResponse, error) {
	vs, err := s.versions(ctx, "")
	if err != nil {
		return api.ListResponse{}, err
	}
	names := make([]string, 0, len(vs))
	for n := range vs {
		names = append(names, n)
	}
	sort.Strings(names)
	names, next, err := page.Slice(names, r, func(n string) string { return n }, strings.Compare)
	if err != nil {
		return api.ListResponse{}, bus.Errorf(400, "%v", err)
	}
	out := api.ListResponse{Workflows: []api.WorkflowSummary{}, NextCursor: next}
	for _, n := range names {
		d, err := s.definition(ctx, n, 0)
		if err != nil {
			continue
		}
		out.Workflows = append(out.Workflows, api.WorkflowSummary{Name: n, Version: d.Version, Description: d.Workflow.Description,
			Steps: len(d.Workflow.Steps), Added: d.Added})
	}
	return out, nil
}

// startRun starts a run of a definition with typed inputs.
func (s *service) startRun(rctx, ctx context.Context, wg *sync.WaitGroup, r api.RunRequest) (api.Run, error) {
	trig := r.Trigger
	if trig == nil {
		trig = &api.Trigger{Kind: "api"}
	}
	// cron, cmdb_change and workflow runs are started by the service itself
	switch {
	case trig.Kind == "alert" && trig.Event == "":
		return api.Run{}, bus.Errorf(400, "trigger alert: give the alert's id as event")
	case trig.Kind != "api" && trig.Kind != "alert":
		return api.Run{}, bus.Errorf(400, "trigger kind %q: a caller starts runs as api or alert (remediation)", trig.Kind)
	}
	if r.IdempotencyKey != "" {
		return s.startOnce(rctx, ctx, wg, r, trig)
	}
	return s.startRunAs(rctx, ctx, wg, r, envelope.NewID(), nil, trig)
}

// maxIdempotencyKey bounds a run_start idempotency key.
const maxIdempotencyKey = 256

// startOnce starts a run under an idempotency key. The key first reserves a run id (KV
// create: one caller wins), then the run is started under that id. A repeat finds the
// reservation and returns the run; when the run is missing — the replica died between the
// two writes — the repeat starts it under the reserved id (a run's first record is written
// only if its history is empty, so two repeats at once still start one run).
func (s *service) startOnce(rctx, ctx context.Context, wg *sync.WaitGroup, r api.RunRequest, trig *api.Trigger) (api.Run, error) {
	if len(r.IdempotencyKey) > maxIdempotencyKey {
		return api.Run{}, bus.Errorf(400, "idempotency_key of %d bytes: at most %d", len(r.IdempotencyKey), maxIdempotencyKey)
	}
	sum := sha256.Sum256([]byte(r.IdempotencyKey))
	k := hex.EncodeToString(sum[:])
	id := envelope.NewID()
	if _, err := s.kvRunKeys.Create(rctx, k, []byte(id)); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return api.Run{}, fmt.Errorf("idempotency key %q: %w", r.IdempotencyKey, err)
		}
		e, gerr := s.kvRunKeys.Get(rctx, k)
		if gerr != nil {
			return api.Run{}, fmt.Errorf("idempotency key %q: %w", r.IdempotencyKey, gerr)
		}
		id = string(e.Value())
		if run, err := s.getRun(rctx, id); err == nil {
			return s.sameStart(r, run)
		}
	}
	run, err := s.startRunAs(rctx, ctx, wg, r, id, nil, trig)
	if errors.Is(err, errStartedAlready) {
		// a concurrent repeat started it first
		if run, err = s.getRun(rctx, id); err == nil {
			return s.sameStart(r, run)
		}
	}
	return run, err
}

// sameStart returns the run an idempotency key started, unless the repeat asks for another
// workflow: a key reused for something else is the caller's mistake, not a repeat.
func (s *service) sameStart(r api.RunRequest, run api.Run) (api.Run, error) {
	if run.Workflow != r.Name {
		return api.Run{}, bus.Errorf(409, "idempotency_key %q started run %s of workflow %s, not %s: give each start its own key", r.IdempotencyKey, run.ID, run.Workflow, r.Name)
	}
	s.log.Info("run start repeated: returning the run its idempotency key started", "run", run.ID, "workflow", run.Workflow)
	return run, nil
}

// startRunAs starts a run with a given id (a child's is chosen by its parent), parent link
// and trigger. A run whose history exists already is not started again (errStartedAlready).
func (s *service) startRunAs(rctx, ctx context.Context, wg *sync.WaitGroup, r api.RunRequest, id string, parent *api.RunLink, trig *api.Trigger) (api.Run, error) {
	if !bus.ValidName(r.Name) {
		return api.Run{}, bus.Errorf(400, "name %q is not a workflow name", r.Name)
	}
	if trig.Kind != "api" && trig.Kind != "alert" {
		// an id derived from what fired it (or chosen by a parent): a second firing finds the
		// run and leaves it, its snapshot included
		if _, err := s.kvRuns.Get(rctx, id); err == nil {
			return api.Run{}, errStartedAlready
		}
	}
	d, wf, err := s.runnable(rctx, r.Name, r.Version)
	if err != nil {
		return api.Run{}, err
	}
	inputs, err := typedInputs(d, r.Inputs)
	if err != nil {
		return api.Run{}, bus.Errorf(400, "%v", err)
	}
	now := s.now()
	run := &api.Run{ID: id, Workflow: d.Name, Version: d.Version, State: api.RunRunning, Inputs: inputs, Created: now,
		Parent: parent, Trigger: trig}
	for _, st := range d.Workflow.Steps {
		run.Steps = append(run.Steps, api.StepRun{ID: st.ID, Kind: st.Kind, State: api.StepPending})
	}
	a := s.newActive(run, wf)
	if err := s.save(rctx, a); err != nil {
		if errors.Is(err, errFenced) {
			return api.Run{}, errStartedAlready
		}
		return api.Run{}, err
	}
	s.log.Info("run started", "run", run.ID, "workflow", d.Name, "version", d.Version, "trigger", trig.Kind)
	cp := snapshot(run)
	s.start(ctx, wg, a)
	return cp, nil
}

// typedInputs checks a run's inputs against the definition: every required input given,
// none unknown, each of its type (strings from the command line are converted).
func typedInputs(d api.Definition, given map[string]any) (map[string]any, error) {
	var errs []error
	out := map[string]any{}
	names := make([]string, 0, len(d.Workflow.Inputs))
	for n := range d.Workflow.Inputs {
		names = append(names, n)
	}
	sort.Strings(names)
	for k := range given {
		if _, ok := d.Workflow.Inputs[k]; !ok {
			errs = append(errs, fmt.Errorf("input %q: workflow %s v%d takes no such input (it takes %s)", k, d.Name, d.Version, orNone(names)))
		}
	}
	for _, n := range names {
		in := d.Workflow.Inputs[n]
		v, ok := given[n]
		if !ok {
			if in.Default != nil {
				out[n] = in.Default
				continue
			}
			if in.Required {
				errs = append(errs, fmt.Errorf("input %s is required by workflow %s v%d: give --input %s=…", n, d.Name, d.Version, n))
			}
			continue
		}
		tv, err := convert(in.Type, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("input %s: %v", n, err))
			continue
		}
		out[n] = tv
	}
	return out, errors.Join(errs...)
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func convert(typ string, v any) (any, error) {
	s, isString := v.(string)
	switch typ {
	case "", "string":
		if !isString {
			return fmt.Sprint(v), nil
		}
		return s, nil
	case "number":
		if f, ok := v.(float64); ok {
			return f, nil
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(s), 64); isString && err == nil {
			return f, nil
		}
		return nil, fmt.Errorf("%v is not a number", v)
	case "bool":
		if b, ok := v.(bool); ok {
			return b, nil
		}
		if b, err := strconv.ParseBool(strings.TrimSpace(s)); isString && err == nil {
			return b, nil
		}
		return nil, fmt.Errorf("%v is not true or false", v)
	}
	return nil, fmt.Errorf("unknown type %q", typ)
}

// getRun returns a run: from memory when this replica advances it, else from KV.
func (s *service) getRun(ctx context.Context, id string) (api.Run, error) {
	if a := s.lookup(id); a != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
		return snapshot(a.run), nil
	}
	r, err := s.load(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
			return api.Run{}, bus.Errorf(404, "no workflow run %q (`outpost workflow runs ls`)", id)
		}
		return api.Run{}, err
	}
	return *r, nil
}

// listRuns pages through runs newest first (run ids are ULIDs: they sort by start time).
func (s *service) listRuns(ctx context.Context, r api.RunsRequest) (api.RunsResponse, error) {
	out := api.RunsResponse{Runs: []api.Run{}}
	keys, err := s.kvRuns.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return out, nil
		}
		return out, err
	}
	var ids []string
	for k := range keys.Keys() {
		ids = append(ids, k)
	}
	desc := func(a, b string) int { return strings.Compare(b, a) }
	slices.SortFunc(ids, desc)
	ids, out.NextCursor, err = page.Slice(ids, r, func(id string) string { return id }, desc)
	if err != nil {
		return out, bus.Errorf(400, "%v", err)
	}
	for _, id := range ids {
		run, err := s.getRun(ctx, id)
		if err == nil {
			out.Runs = append(out.Runs, run)
		}
	}
	return out, nil
}

// cancel asks the run's goroutine to cancel it; what is in flight is not recalled, its
// result is no longer taken.
func (s *service) cancel(ctx context.Context, id string) (api.Run, error) {
	a := s.lookup(id)
	if a == nil {
		r, err := s.getRun(ctx, id)
		if err != nil {
			return r, err
		}
		return r, bus.Errorf(409, "run %s is %s already", id, r.State)
	}
	a.mu.Lock()
	a.run.CancelRequested = true
	err := s.save(ctx, a)
	a.mu.Unlock()
	if err != nil {
		return api.Run{}, err
	}
	a.wake()
	return s.getRun(ctx, id)
}

// approve records the decision on an approval step waiting in a run.
func (s *service) approve(ctx context.Context, r api.ApproveRequest) (api.Run, error) {
	a := s.lookup(r.Run)
	if a == nil {
		run, err := s.getRun(ctx, r.Run)
		if err != nil {
			return run, err
		}
		return run, bus.Errorf(409, "run %s is %s: nothing waits for an approval", r.Run, run.State)
	}
	a.mu.Lock()
	st := a.run.Step(r.Step)
	var err error
	switch {
	case st == nil:
		err = bus.Errorf(404, "run %s has no step %q", r.Run, r.Step)
	case st.Kind != api.KindApproval:
		err = bus.Errorf(400, "step %s is a %s step, not an approval", r.Step, st.Kind)
	case st.State != api.StepWaiting:
		err = bus.Errorf(409, "step %s is %s, not waiting for an approval", r.Step, st.State)
	default:
		now := s.now()
		st.Approval = &api.Approval{Approved: !r.Reject, By: r.By, Comment: r.Comment, Time: now}
		if r.Reject {
			s.attemptFailed(a, a.step(st.ID), st, "rejected"+suffix(r.Comment), true, 0)
		} else {
			out, _ := json.Marshal(map[string]any{"approved": true, "by": r.By, "comment": r.Comment})
			s.attemptSucceeded(st, out)
		}
		err = s.save(ctx, a)
	}
	a.mu.Unlock()
	if err != nil {
		return api.Run{}, err
	}
	s.log.Info("approval", "run", r.Run, "step", r.Step, "approved", !r.Reject)
	a.wake()
	return s.getRun(ctx, r.Run)
}

func suffix(comment string) string {
	if comment == "" {
		return ""
	}
	return ": " + comment
}

// snapshot is a deep copy of a run, for answers encoded after the run's lock is released.
func snapshot(r *api.Run) api.Run {
	var cp api.Run
	b, _ := json.Marshal(r)
	_ = json.Unmarshal(b, &cp)
	return cp
}
