package transform

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
	"go.yaml.in/yaml/v3"

	"github.com/outpost-dev/outpost/libs/bus"
)

// Map is a loaded, checked transform map: every expression compiled, every attribute known
// to the target class with its type.
type Map struct {
	Name     string
	Source   string // the CMDB source name rows are reconciled as
	Class    string
	Coalesce []string
	Fields   []Field // in file order
	SkipIf   *Expr
	Related  []Related
}

// Field is one target attribute and the expression that computes it.
type Field struct {
	Attr string
	Type string // the class's type of the attribute
	Expr *Expr
}

// Expr is a compiled expr-lang expression with where it was written.
type Expr struct {
	Src  string
	Line int
	// Columns are the row columns it reads (row.x, row["x"]): a failure points at their cells.
	Columns []string
	prog    *vm.Program
}

// Related is a CI made or found per row and linked to the row's CI.
type Related struct {
	Type   string // relation type, row's CI → related CI
	Class  string
	Fields []Field
	// Child: the related class is identified through its parent (software, adapters), so
	// it is sent as the row CI's child and the CMDB links the two.
	Child bool
}

// DefaultSource is the CMDB source name of imports whose map names none: it ranks below
// discovery in the default precedence.
const DefaultSource = "import"

// Problem is one thing wrong with a map: where, which field, why.
type Problem struct {
	File   string
	Line   int
	Field  string
	Reason string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, p.Field, p.Reason)
}

// MapError lists every problem of a map.
type MapError struct{ Problems []Problem }

func (e *MapError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// exprEnv is what expressions see: the staged row's columns.
func exprEnv(row map[string]any) map[string]any { return map[string]any{"row": row} }

// Load reads and checks a map against the CMDB's model; file names the map in errors. Every
// problem is reported at once, each with file, line and field.
func Load(file string, data []byte, m *Model) (*Map, error) {
	if file == "" {
		file = "map.yaml"
	}
	l := &loader{file: file, model: m}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line := 1
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			fmt.Sscanf(strings.TrimPrefix(err.Error(), "yaml: "), "line %d:", &line)
		}
		return nil, &MapError{[]Problem{{file, line, "(map)", "not YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}}
	}
	if len(doc.Content) == 0 {
		return nil, &MapError{[]Problem{{file, 1, "(map)", "empty: a map needs name, target, coalesce and fields"}}}
	}
	out := l.load(doc.Content[0])
	if len(l.problems) > 0 {
		sort.SliceStable(l.problems, func(i, j int) bool { return l.problems[i].Line < l.problems[j].Line })
		return nil, &MapError{l.problems}
	}
	return out, nil
}

type loader struct {
	file     string
	model    *Model
	problems []Problem
}

func (l *loader) bad(n *yaml.Node, field, format string, args ...any) {
	line := 1
	if n != nil {
		line = n.Line
	}
	l.problems = append(l.problems, Problem{l.file, line, field, fmt.Sprintf(format, args...)})
}

// mapping returns a mapping node's keys and values, reporting keys not in allowed.
func (l *loader) mapping(n *yaml.Node, field string, allowed ...string) map[string][2]*yaml.Node {
	out := map[string][2]*yaml.Node{}
	if n.Kind != yaml.MappingNode {
		l.bad(n, field, "want a mapping (key: value), found %s", kind(n))
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if allowed != nil && !slices.Contains(allowed, k.Value) {
			l.bad(k, join(field, k.Value), "unknown key (known: %s)", strings.Join(allowed, ", "))
			continue
		}
		if _, dup := out[k.Value]; dup {
			l.bad(k, join(field, k.Value), "given twice")
		}
		out[k.Value] = [2]*yaml.Node{k, v}
	}
	return out
}

func (l *loader) scalar(n *yaml.Node, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		l.bad(n, field, "want a text value, found %s", kind(n))
		return "", false
	}
	return n.Value, true
}

func (l *loader) load(root *yaml.Node) *Map {
	top := l.mapping(root, "(map)", "name", "source", "target", "coalesce", "fields", "skip_if", "relations")
	m := &Map{Source: DefaultSource}
	for _, req := range []string{"name", "target", "coalesce", "fields"} {
		if _, ok := top[req]; !ok {
			l.bad(root, req, "missing (a map needs name, target, coalesce and fields)")
		}
	}
	if kv, ok := top["name"]; ok {
		if s, ok := l.scalar(kv[1], "name"); ok {
			if strings.TrimSpace(s) == "" {
				l.bad(kv[1], "name", "empty")
			}
			m.Name = s
		}
	}
	if kv, ok := top["source"]; ok {
		if s, ok := l.scalar(kv[1], "source"); ok {
			// "import" or "import:<name>" rank as import; "sccm" ranks as sccm.
			base, sub, _ := strings.Cut(s, ":")
			if !bus.ValidName(base) || (sub != "" && !bus.ValidName(sub)) {
				l.bad(kv[1], "source", "%q: want a source name of a-z, 0-9 and -, optionally name:detail (e.g. import:hr)", s)
			}
			m.Source = s
		}
	}
	if kv, ok := top["target"]; ok {
		t := l.mapping(kv[1], "target", "class")
		if c, ok := t["class"]; ok {
			if s, ok := l.scalar(c[1], "target.class"); ok {
				m.Class = s
				l.checkClass(c[1], "target.class", s, false)
			}
		} else {
			l.bad(kv[1], "target.class", "missing: the CMDB class rows become (e.g. linux_server)")
		}
	}
	_, classOK := l.model.Classes[m.Class]
	if kv, ok := top["fields"]; ok {
		m.Fields = l.fields(kv[1], "fields", m.Class, classOK)
		if len(m.Fields) == 0 && kv[1].Kind == yaml.MappingNode {
			l.bad(kv[1], "fields", "empty: map at least one attribute")
		}
	}
	if kv, ok := top["coalesce"]; ok {
		m.Coalesce = l.coalesce(kv[1], m, classOK)
	}
	if kv, ok := top["skip_if"]; ok {
		if s, ok := l.scalar(kv[1], "skip_if"); ok {
			m.SkipIf = l.compile(kv[1], "skip_if", s, true)
		}
	}
	if kv, ok := top["relations"]; ok {
		m.Related = l.relations(kv[1], m.Class, classOK)
	}
	return m
}

func (l *loader) checkClass(n *yaml.Node, field, class string, related bool) bool {
	c, ok := l.model.Classes[class]
	switch {
	case !ok:
		l.bad(n, field, "unknown CMDB class %q (known: %s)", class, strings.Join(l.model.classNames(), ", "))
		return false
	case c.Abstract:
		l.bad(n, field, "class %q is abstract: choose one of its subclasses", class)
		return false
	}
	if parents, dep := l.model.dependent(class); dep && !related {
		l.bad(n, field, "%s CIs are identified through their parent (%s): import the parent class and give %s under relations",
			class, strings.Join(parents, ", "), class)
		return false
	}
	return true
}

func (l *loader) fields(n *yaml.Node, field, class string, classOK bool) []Field {
	var out []Field
	if n.Kind != yaml.MappingNode {
		l.bad(n, field, "want attribute: expression pairs, found %s", kind(n))
		return nil
	}
	attrs := l.model.Classes[class].Attributes
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f := join(field, k.Value)
		if seen[k.Value] {
			l.bad(k, f, "given twice")
		}
		seen[k.Value] = true
		typ, known := attrs[k.Value]
		if classOK && !known {
			l.bad(k, f, "class %s has no attribute %q%s", class, k.Value, suggest(k.Value, attrs))
		}
		src, ok := l.scalar(v, f)
		if !ok {
			continue
		}
		if strings.TrimSpace(src) == "" {
			l.bad(v, f, "empty expression")
			continue
		}
		out = append(out, Field{Attr: k.Value, Type: typ, Expr: l.compile(v, f, src, false)})
	}
	return out
}

func (l *loader) coalesce(n *yaml.Node, m *Map, classOK bool) []string {
	if n.Kind != yaml.SequenceNode {
		l.bad(n, "coalesce", "want a list of attributes ([] = always insert), found %s", kind(n))
		return nil
	}
	out := []string{}
	for _, e := range n.Content {
		if s, ok := l.scalar(e, "coalesce"); ok {
			out = append(out, s)
			if !slices.ContainsFunc(m.Fields, func(f Field) bool { return f.Attr == s }) {
				l.bad(e, "coalesce", "%q is not mapped under fields: a row could never have a value for it", s)
			}
		}
	}
	if len(out) == 0 || !classOK {
		return out
	}
	// The CMDB finds an existing CI only through its identification rules: coalescing on
	// anything else would promise a match the CMDB does not make.
	rules := l.model.identifiedBy(m.Class)
	want := slices.Sorted(slices.Values(out))
	for _, r := range rules {
		if slices.Equal(slices.Sorted(slices.Values(r)), want) {
			return out
		}
	}
	alts := make([]string, len(rules))
	for i, r := range rules {
		alts[i] = "[" + strings.Join(r, ", ") + "]"
	}
	l.bad(n, "coalesce", "the CMDB identifies %s by %s; [%s] is none of them, so rows would not be matched as you expect",
		m.Class, strings.Join(alts, " or "), strings.Join(out, ", "))
	return out
}

func (l *loader) relations(n *yaml.Node, class string, classOK bool) []Related {
	if n.Kind != yaml.SequenceNode {
		l.bad(n, "relations", "want a list of {type, to: {class, fields}}, found %s", kind(n))
		return nil
	}
	var out []Related
	for i, e := range n.Content {
		field := fmt.Sprintf("relations[%d]", i)
		r := l.mapping(e, field, "type", "to")
		rel := Related{}
		if kv, ok := r["type"]; ok {
			if s, ok := l.scalar(kv[1], field+".type"); ok {
				rel.Type = s
				if _, known := l.model.Relations[s]; !known {
					names := make([]string, 0, len(l.model.Relations))
					for n := range l.model.Relations {
						names = append(names, n)
					}
					slices.Sort(names)
					l.bad(kv[1], field+".type", "unknown relation type %q (known: %s)", s, strings.Join(names, ", "))
				}
			}
		} else {
			l.bad(e, field+".type", "missing")
		}
		kv, ok := r["to"]
		if !ok {
			l.bad(e, field+".to", "missing: {class, fields}")
			continue
		}
		to := l.mapping(kv[1], field+".to", "class", "fields")
		c, ok := to["class"]
		if !ok {
			l.bad(kv[1], field+".to.class", "missing")
			continue
		}
		s, ok := l.scalar(c[1], field+".to.class")
		if !ok {
			continue
		}
		rel.Class = s
		relOK := l.checkClass(c[1], field+".to.class", s, true)
		_, rel.Child = l.model.dependent(s)
		if fv, ok := to["fields"]; ok {
			rel.Fields = l.fields(fv[1], field+".to.fields", s, relOK)
		} else {
			l.bad(kv[1], field+".to.fields", "missing: the related CI's attributes")
		}
		out = append(out, rel)
	}
	return out
}

// compile compiles an expression over `row` once, at load.
func (l *loader) compile(n *yaml.Node, field, src string, asBool bool) *Expr {
	opts := []expr.Option{expr.Env(exprEnv(map[string]any{}))}
	if asBool {
		opts = append(opts, expr.AsBool())
	}
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		l.bad(n, field, "expression %q does not compile: %s", src, oneLine(err.Error()))
		return nil
	}
	return &Expr{Src: src, Line: n.Line, prog: prog, Columns: columnsOf(prog)}
}

// columnsOf lists the columns an expression reads from row, in order of appearance.
func columnsOf(prog *vm.Program) []string {
	c := &columnCollector{}
	node := prog.Node()
	ast.Walk(&node, c)
	return c.cols
}

type columnCollector struct{ cols []string }

func (c *columnCollector) Visit(n *ast.Node) {
	m, ok := (*n).(*ast.MemberNode)
	if !ok {
		return
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok || id.Value != "row" {
		return
	}
	if p, ok := m.Property.(*ast.StringNode); ok && !slices.Contains(c.cols, p.Value) {
		c.cols = append(c.cols, p.Value)
	}
}

func join(parent, key string) string {
	if parent == "(map)" || parent == "" {
		return key
	}
	return parent + "." + key
}

func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "something else"
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// suggest names the closest attribute, for a typo.
func suggest(name string, attrs map[string]string) string {
	best, bestD := "", 4
	for a := range attrs {
		d := distance(name, a)
		if strings.HasPrefix(a, name) || strings.HasPrefix(name, a) {
			d = min(d, 1) // ram → ram_mb
		}
		if d < bestD || (d == bestD && a < best) {
			best, bestD = a, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// distance is the Levenshtein distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
