package orchestration

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
)

// stepID is what a step id may be: it is used as steps.<id> in expressions and in probe ids.
var stepID = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// inputName is what an input may be called: inputs.<name> in expressions.
var inputName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,62}$`)

// builtins are the step kinds the service runs itself.
var builtins = []string{api.KindApproval, api.KindWait, api.KindCMDBUpdate, api.KindNotify, api.KindWorkflow}

// defaultTimeout is an attempt's timeout when the step sets none: MID server users expect
// 120 s for an SSH command; built-ins that call the hub or a webhook get 30 s; an approval
// or a wait is not bounded unless the step says so.
func defaultTimeout(kind string) time.Duration {
	switch kind {
	case api.KindApproval, api.KindWait:
		return 0
	case api.KindCMDBUpdate, api.KindNotify:
		return 30 * time.Second
	case api.KindWorkflow:
		return 24 * time.Hour // a child run may wait for its own approvals
	}
	return 120 * time.Second
}

// DefinitionError is one problem of a definition: the file, the step (when it is about
// one) and the reason.
type DefinitionError struct {
	File, Step, Reason string
}

func (e *DefinitionError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File + ": ")
	}
	if e.Step != "" {
		b.WriteString("step " + e.Step + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// workflow is a validated definition with what running it needs precomputed.
type workflow struct {
	api.Workflow
	order    []string       // steps in a topological order (definition order among peers)
	index    map[string]int // step id → index in Steps
	timeouts map[string]time.Duration
	// compensations are the compensating steps of each step (on_failure: [...]), each with
	// its run id <step>:<id>, in the order they run.
	compensations map[string][]api.Step
	comp          map[string]api.Step // <step>:<id> → its step
}

// ParseDefinition reads and validates a YAML definition; every problem is reported
// (errors.Join of *DefinitionError), each naming file and step.
func ParseDefinition(file string, src []byte) (*workflow, error) {
	var w api.Workflow
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&w); err != nil {
		return nil, &DefinitionError{File: file, Reason: "not a workflow definition: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	return validate(file, w)
}

func validate(file string, w api.Workflow) (*workflow, error) {
	var errs []error
	bad := func(step, format string, args ...any) {
		errs = append(errs, &DefinitionError{File: file, Step: step, Reason: fmt.Sprintf(format, args...)})
	}
	if !bus.ValidName(w.Name) {
		bad("", "name %q: want 1-64 of a-z, 0-9 and - (it names the workflow on the bus and in CMDB history)", w.Name)
	}
	for name, in := range w.Inputs {
		if !inputName.MatchString(name) {
			bad("", "input %q: want letters, digits and _ (it is inputs.%s in expressions)", name, name)
		}
		switch in.Type {
		case "", "string", "number", "bool":
		default:
			bad("", "input %s: type %q: want string, number or bool", name, in.Type)
		}
	}
	if len(w.Steps) == 0 {
		bad("", "no steps")
	}
	wf := &workflow{Workflow: w, index: map[string]int{}, timeouts: map[string]time.Duration{},
		compensations: map[string][]api.Step{}, comp: map[string]api.Step{}}
	for i, s := range w.Steps {
		id := s.ID
		if id == "" {
			id = fmt.Sprintf("#%d", i+1)
			bad(id, "id is required")
		} else if !stepID.MatchString(id) {
			bad(id, "id: want a-z, 0-9 and _, starting with a letter (it is steps.%s in expressions)", id)
		}
		if _, dup := wf.index[s.ID]; dup && s.ID != "" {
			bad(id, "id used by another step")
		}
		wf.index[s.ID] = i
	}
	for _, s := range w.Steps {
		errs = append(errs, validateStep(file, wf, s)...)
		// compensating steps: validated as steps of their own, named <step>:<id>; they run
		// one after another, so they take no needs, and neither loops nor compensations
		seen := map[string]bool{}
		for i, c := range s.OnFailure.Compensate {
			name := fmt.Sprintf("%s:%s", s.ID, c.ID)
			switch {
			case c.ID == "":
				name = fmt.Sprintf("%s:#%d", s.ID, i+1)
				bad(name, "id is required")
			case !stepID.MatchString(c.ID):
				bad(name, "id: want a-z, 0-9 and _, starting with a letter")
			case seen[c.ID]:
				bad(name, "id used by another compensating step of %s", s.ID)
			}
			seen[c.ID] = true
			if len(c.Needs) > 0 {
				bad(name, "needs: compensating steps run one after another, in the order listed")
			}
			if c.ForEach != "" {
				bad(name, "for_each is not supported in a compensating step")
			}
			if !c.OnFailure.IsZero() {
				bad(name, "on_failure: every compensating step runs, whatever the others do")
			}
			c.ID = name
			c.Needs = nil
			errs = append(errs, validateStep(file, wf, c)...)
			wf.compensations[s.ID] = append(wf.compensations[s.ID], c)
			wf.comp[name] = c
		}
	}
	errs = append(errs, validateTriggers(file, wf)...)
	for name, e := range w.Outputs {
		if !inputName.MatchString(name) {
			bad("", "output %q: want letters, digits and _", name)
		}
		all := map[string]bool{}
		for id := range wf.index {
			all[id] = true
		}
		for _, x := range expressionsIn(e) {
			if err := checkExpression(x, w.Inputs, all, wf.index, false); err != nil {
				bad("", "outputs.%s: %v", name, err)
			}
		}
	}
	if len(errs) == 0 {
		order, cycle := topoOrder(w.Steps)
		if cycle != nil {
			bad(cycle[0], "needs form a cycle: %s", strings.Join(cycle, " → "))
		}
		wf.order = order
	}
	if len(errs) == 0 {
		// expressions may only read steps that surely ran before: the step's ancestors
		for _, s := range w.Steps {
			anc := ancestors(wf, s.ID)
			for _, e := range stepExpressions(s) {
				// item and index exist in a for_each step, but not in its list
				withItem := s.ForEach != "" && e.field != "for_each"
				if err := checkExpression(e.text, w.Inputs, anc, wf.index, withItem); err != nil {
					bad(s.ID, "%s: %v", e.field, err)
				}
			}
			// a compensating step reads what its failed step read, and the failed step
			anc[s.ID] = true
			for _, c := range wf.compensations[s.ID] {
				for _, e := range stepExpressions(c) {
					if err := checkExpression(e.text, w.Inputs, anc, wf.index, false); err != nil {
						bad(c.ID, "%s: %v", e.field, err)
					}
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return wf, nil
}

func validateStep(file string, wf *workflow, s api.Step) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, &DefinitionError{File: file, Step: s.ID, Reason: fmt.Sprintf(format, args...)})
	}
	for _, n := range s.Needs {
		if _, ok := wf.index[n]; !ok {
			bad("needs %q: no step has that id", n)
		} else if n == s.ID {
			bad("needs itself")
		}
	}
	builtin := slices.Contains(builtins, s.Kind)
	spec, isProbe := catalog.Lookup(s.Kind)
	switch {
	case s.Kind == "":
		bad("kind is required: a probe kind (%s) or a built-in (%s)", strings.Join(catalog.Kinds(), ", "), strings.Join(builtins, ", "))
	case !builtin && !isProbe:
		bad("unknown kind %q: want a probe kind (%s) or a built-in (%s)", s.Kind, strings.Join(catalog.Kinds(), ", "), strings.Join(builtins, ", "))
	}
	if s.ForEach != "" {
		if _, ok := wholeExpression(s.ForEach); !ok {
			bad("for_each %q: want one expression giving a list, e.g. '${{ inputs.hosts }}'", s.ForEach)
		}
		if s.Concurrency < 0 || s.Concurrency > 1000 {
			bad("concurrency %d: want 1 to 1000 (default %d)", s.Concurrency, defaultConcurrency)
		}
	} else if s.Concurrency != 0 {
		bad("concurrency is for for_each steps")
	}
	if isProbe {
		switch {
		case s.Site != "" && s.SiteOf != "":
			bad("site and site_of: give one (site names the site; site_of an address the site's ranges hold)")
		case s.Site == "" && s.SiteOf == "":
			bad("site or site_of is required for a probe kind (the site whose bridges run it)")
		case s.Site != "" && !strings.Contains(s.Site, "${{") && !bus.ValidName(s.Site):
			bad("site %q is not a site name", s.Site)
		}
		if len(s.Credentials) > 0 && len(spec.Credentials) == 0 {
			bad("kind %s takes no credentials", s.Kind)
		}
		if s.Priority != "" && !slices.Contains(envelope.Priorities, s.Priority) {
			bad("priority %q: want one of %s", s.Priority, strings.Join(envelope.Priorities, ", "))
		}
		// params with expressions are checked once rendered, when the step runs
		if raw, err := jsonOf(s.Params); err != nil {
			bad("params: %v", err)
		} else if !strings.Contains(string(raw), "${{") && len(s.Params) > 0 {
			if err := spec.ValidateParams(raw); err != nil {
				bad("%v", err)
			}
		}
	} else if builtin {
		if s.Site != "" || s.SiteOf != "" || s.Target != "" || len(s.Credentials) > 0 || s.Priority != "" {
			bad("site, site_of, target, credentials and priority are for probe kinds, not %s", s.Kind)
		}
		errs = append(errs, validateBuiltin(file, s)...)
	}
	if s.Timeout != "" {
		d, err := time.ParseDuration(s.Timeout)
		if err != nil || d <= 0 || d > 24*time.Hour {
			bad("timeout %q: want a duration from 1s to 24h, e.g. 30s", s.Timeout)
		} else {
			wf.timeouts[s.ID] = d
		}
	} else {
		wf.timeouts[s.ID] = defaultTimeout(s.Kind)
	}
	if r := s.Retry; r != nil {
		if r.MaxAttempts < 1 || r.MaxAttempts > 100 {
			bad("retry.max_attempts %d: want 1 to 100", r.MaxAttempts)
		}
		switch r.Backoff {
		case "", "fixed", "exponential":
		default:
			bad("retry.backoff %q: want fixed or exponential", r.Backoff)
		}
		for field, v := range map[string]string{"initial": r.Initial, "max": r.Max} {
			if v == "" {
				continue
			}
			if d, err := time.ParseDuration(v); err != nil || d < 0 {
				bad("retry.%s %q: want a duration, e.g. 1s", field, v)
			}
		}
	}
	switch s.OnFailure.Action {
	case "", "fail", "continue":
	default:
		bad("on_failure %q: want fail, continue or a list of compensating steps", s.OnFailure.Action)
	}
	return errs
}

func validateBuiltin(file string, s api.Step) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, &DefinitionError{File: file, Step: s.ID, Reason: fmt.Sprintf(format, args...)})
	}
	allowed := map[string][]string{api.KindApproval: {"message"}, api.KindWait: {"duration"},
		api.KindCMDBUpdate: {"ci", "set"}, api.KindNotify: {"url", "method", "body", "headers"},
		api.KindWorkflow: {"workflow", "version", "inputs"}}[s.Kind]
	for k := range s.Params {
		if !slices.Contains(allowed, k) {
			bad("params.%s: %s takes %s", k, s.Kind, strings.Join(allowed, ", "))
		}
	}
	str := func(k string) (string, bool) { v, ok := s.Params[k].(string); return v, ok }
	switch s.Kind {
	case api.KindWait:
		v, ok := str("duration")
		if !ok {
			bad("params.duration is required (e.g. 30s)")
		} else if !strings.Contains(v, "${{") {
			if d, err := time.ParseDuration(v); err != nil || d <= 0 {
				bad("params.duration %q: want a duration, e.g. 30s", v)
			}
		}
	case api.KindCMDBUpdate:
		ci, ok := s.Params["ci"].(map[string]any)
		if !ok {
			bad("params.ci is required: {class: ..., <identifying attribute>: ...}")
		} else {
			if c, _ := ci["class"].(string); c == "" {
				bad("params.ci.class is required")
			}
			if len(ci) < 2 {
				bad("params.ci needs at least one identifying attribute besides class (ip_address, name, serial_number…)")
			}
		}
		if set, ok := s.Params["set"].(map[string]any); !ok || len(set) == 0 {
			bad("params.set is required: {attribute: value, …}")
		}
	case api.KindWorkflow:
		if v, ok := str("workflow"); !ok || !bus.ValidName(v) {
			bad("params.workflow is required: the name of the workflow to run")
		}
		if v, ok := s.Params["version"]; ok {
			if n, isInt := v.(int); !isInt || n < 1 {
				bad("params.version %v: want a version number (default the latest)", v)
			}
		}
		if v, ok := s.Params["inputs"]; ok {
			if _, isMap := v.(map[string]any); !isMap {
				bad("params.inputs: want a map of the child's inputs")
			}
		}
	case api.KindNotify:
		if v, ok := str("url"); !ok || v == "" {
			bad("params.url is required (the webhook to POST to)")
		}
		if v, ok := s.Params["method"]; ok && v != "POST" && v != "PUT" {
			bad("params.method %v: want POST or PUT", v)
		}
	}
	return errs
}

// topoOrder returns the steps in an order where every step follows its needs; when the
// needs form a cycle it returns the cycle's ids (first repeated at the end).
func topoOrder(steps []api.Step) ([]string, []string) {
	needs := map[string][]string{}
	for _, s := range steps {
		needs[s.ID] = s.Needs
	}
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var order, stack []string
	var cycle []string
	var visit func(id string) bool
	visit = func(id string) bool {
		switch color[id] {
		case grey:
			i := slices.Index(stack, id)
			cycle = append(slices.Clone(stack[i:]), id)
			return false
		case black:
			return true
		}
		color[id] = grey
		stack = append(stack, id)
		for _, n := range needs[id] {
			if !visit(n) {
				return false
			}
		}
		stack = stack[:len(stack)-1]
		color[id] = black
		order = append(order, id)
		return true
	}
	for _, s := range steps {
		if !visit(s.ID) {
			return nil, cycle
		}
	}
	return order, nil
}

// ancestors are the steps id transitively needs.
func ancestors(wf *workflow, id string) map[string]bool {
	out := map[string]bool{}
	var walk func(string)
	walk = func(id string) {
		for _, n := range wf.Steps[wf.index[id]].Needs {
			if !out[n] {
				out[n] = true
				walk(n)
			}
		}
	}
	walk(id)
	return out
}

type fieldExpr struct{ field, text string }

// stepExpressions lists every ${{ }} of a step (and its if:) with the field it is in.
func stepExpressions(s api.Step) []fieldExpr {
	var out []fieldExpr
	add := func(field, v string) {
		for _, e := range expressionsIn(v) {
			out = append(out, fieldExpr{field, e})
		}
	}
	if s.If != "" {
		if e, ok := wholeExpression(s.If); ok {
			out = append(out, fieldExpr{"if", e})
		} else if !strings.Contains(s.If, "${{") {
			out = append(out, fieldExpr{"if", s.If})
		} else {
			add("if", s.If)
		}
	}
	add("for_each", s.ForEach)
	add("site", s.Site)
	add("site_of", s.SiteOf)
	add("target", s.Target)
	for i, c := range s.Credentials {
		add(fmt.Sprintf("credentials[%d]", i), c)
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case string:
			add(path, x)
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(path+"."+k, x[k])
			}
		case []any:
			for i, e := range x {
				walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
	}
	walk("params", s.Params)
	return out
}
