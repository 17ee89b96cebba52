package orchestration

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// Expressions are ${{ … }} in a step's strings, written in expr-lang (as discovery's
// classifiers are) over:
//
//	inputs.<name>           the run's inputs, typed by the definition
//	steps.<id>.output       a step's output (a probe's result data; a built-in's answer)
//	steps.<id>.state        succeeded | failed | skipped …
//	steps.<id>.attempts     how many attempts it took
//	run.id, run.workflow, run.version
//	now()                   the time (RFC 3339, UTC), from the service's clock
//	item, index             in a for_each step: the item of the list and its index
//
// A string that is one expression and nothing else takes the expression's value and type
// (a list stays a list); expressions inside other text are formatted into it.
var exprPattern = regexp.MustCompile(`\$\{\{(.*?)\}\}`)

// expressionsIn returns the expressions of a string.
func expressionsIn(s string) []string {
	var out []string
	for _, m := range exprPattern.FindAllStringSubmatch(s, -1) {
		out = append(out, strings.TrimSpace(m[1]))
	}
	return out
}

// wholeExpression reports whether s is exactly one expression, and which.
func wholeExpression(s string) (string, bool) {
	t := strings.TrimSpace(s)
	m := exprPattern.FindStringSubmatchIndex(t)
	if m == nil || m[0] != 0 || m[1] != len(t) {
		return "", false
	}
	return strings.TrimSpace(t[m[2]:m[3]]), true
}

// checkExpression compiles an expression against the shape of what it will see, and
// refuses reads of inputs that are not declared or of steps that are not among the step's
// ancestors (their output may not exist when it runs).
func checkExpression(text string, inputs map[string]api.Input, anc map[string]bool, steps map[string]int, withItem bool) error {
	if strings.TrimSpace(text) == "" {
		return fmt.Errorf("empty expression")
	}
	env := exprEnv(map[string]any{}, map[string]any{}, map[string]any{}, func() string { return "" })
	if withItem {
		env["index"] = 0
	}
	prog, err := expr.Compile(text, expr.Env(checkEnv(env, withItem)), expr.DisableBuiltin("now"))
	if err != nil {
		return fmt.Errorf("bad expression %q: %s", text, firstLine(err.Error()))
	}
	c := &refChecker{}
	node := prog.Node()
	ast.Walk(&node, c)
	for _, ref := range c.refs {
		switch ref.root {
		case "inputs":
			if _, ok := inputs[ref.name]; !ok {
				return fmt.Errorf("expression %q reads inputs.%s, which the workflow does not declare", text, ref.name)
			}
		case "steps":
			if _, ok := steps[ref.name]; !ok {
				return fmt.Errorf("expression %q reads steps.%s: no step has that id", text, ref.name)
			}
			if !anc[ref.name] {
				return fmt.Errorf("expression %q reads steps.%s, which this step does not need (add it to needs)", text, ref.name)
			}
		}
	}
	return nil
}

// checkEnv is env as a struct for the type checker, with item (when withItem) of type any:
// a nil value in a map env would be typed nil, and split(item, "|") or item.ip refused.
func checkEnv(env map[string]any, withItem bool) any {
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	var fields []reflect.StructField
	for i, k := range names {
		fields = append(fields, reflect.StructField{Name: fmt.Sprintf("F%d", i), Type: reflect.TypeOf(env[k]), Tag: reflect.StructTag(`expr:"` + k + `"`)})
	}
	if withItem {
		fields = append(fields, reflect.StructField{Name: "Item", Type: reflect.TypeFor[any](), Tag: `expr:"item"`})
	}
	v := reflect.New(reflect.StructOf(fields)).Elem()
	for i, k := range names {
		v.Field(i).Set(reflect.ValueOf(env[k]))
	}
	return v.Interface()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

type ref struct{ root, name string }

// refChecker collects inputs.<x> and steps.<x> of an expression.
type refChecker struct{ refs []ref }

func (c *refChecker) Visit(n *ast.Node) {
	m, ok := (*n).(*ast.MemberNode)
	if !ok {
		return
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok || (id.Value != "inputs" && id.Value != "steps") {
		return
	}
	if p, ok := m.Property.(*ast.StringNode); ok {
		c.refs = append(c.refs, ref{id.Value, p.Value})
	}
}

func exprEnv(inputs, steps, run map[string]any, now func() string) map[string]any {
	return map[string]any{"inputs": inputs, "steps": steps, "run": run, "now": now}
}

// programs caches compiled expressions by their text.
var programs sync.Map // string → *vm.Program

func eval(text string, env map[string]any) (any, error) {
	p, ok := programs.Load(text)
	if !ok {
		// now() is the service's clock (injected), not expr's built-in wall clock
		prog, err := expr.Compile(text, expr.DisableBuiltin("now"))
		if err != nil {
			return nil, fmt.Errorf("bad expression %q: %s", text, firstLine(err.Error()))
		}
		p, _ = programs.LoadOrStore(text, prog)
	}
	v, err := expr.Run(p.(*vm.Program), env)
	if err != nil {
		return nil, fmt.Errorf("expression %q: %s", text, firstLine(err.Error()))
	}
	return v, nil
}

// render evaluates the expressions of v (a string, or maps and lists of them).
func render(v any, env map[string]any) (any, error) {
	switch x := v.(type) {
	case string:
		if e, ok := wholeExpression(x); ok {
			return eval(e, env)
		}
		if !strings.Contains(x, "${{") {
			return x, nil
		}
		var firstErr error
		out := exprPattern.ReplaceAllStringFunc(x, func(m string) string {
			r, err := eval(strings.TrimSpace(m[3:len(m)-2]), env)
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return ""
			}
			return format(r)
		})
		return out, firstErr
	case map[string]any:
		out := make(map[string]any, len(x))
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			r, err := render(x[k], env)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			r, err := render(e, env)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = r
		}
		return out, nil
	}
	return v, nil
}

// renderString renders a string field that must stay a string (site, target).
func renderString(s string, env map[string]any) (string, error) {
	v, err := render(s, env)
	if err != nil {
		return "", err
	}
	return format(v), nil
}

// condition evaluates an if: (with or without ${{ }}).
func condition(s string, env map[string]any) (bool, error) {
	text := s
	if e, ok := wholeExpression(s); ok {
		text = e
	}
	v, err := eval(text, env)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("if %q is %v, not true or false", s, v)
	}
	return b, nil
}

func format(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	case map[string]any, []any:
		b, _ := json.Marshal(x)
		return string(b)
	}
	return fmt.Sprint(v)
}

// runEnv is what a run's expressions see now.
// resolve turns a kept output into what expressions see (nil: as it is kept).
func runEnv(r *api.Run, now func() time.Time, resolve func(json.RawMessage) any) map[string]any {
	steps := make(map[string]any, len(r.Steps))
	for _, st := range r.Steps {
		if st.Parent != "" || st.Compensates != "" {
			continue // an item (its for_each step's output lists them), a compensation
		}
		var out any
		if len(st.Output) > 0 {
			if resolve != nil {
				out = resolve(st.Output)
			} else {
				_ = json.Unmarshal(st.Output, &out)
			}
		}
		steps[st.ID] = map[string]any{"output": out, "state": st.State, "attempts": len(st.Attempts)}
	}
	inputs := r.Inputs
	if inputs == nil {
		inputs = map[string]any{}
	}
	run := map[string]any{"id": r.ID, "workflow": r.Workflow, "version": r.Version}
	return exprEnv(inputs, steps, run, func() string { return now().UTC().Format(time.RFC3339) })
}

// jsonOf marshals params for schema checks and probes.
func jsonOf(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	return json.Marshal(v)
}
