package correlation

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Rule files are data, like discovery's classifiers: YAML files in a directory
// (Config.RulesDir), every problem reported at load with file:line and the reason, so a
// bad rule never reaches a running pipeline. A file holds any of:
//
//	event_rules:          # first match wins, in file order (files by name)
//	  - name: drop-debug
//	    match: {severity: info, type: "~^debug"}   # exact value, or ~regex
//	    ignore: true                                # dropped and counted per rule
//	  - name: link-down
//	    match: {type: linkDown}
//	    transform: {severity: critical, message_key: "link-{node}-{resource}"}
//	  - name: cpu
//	    match: {type: cpu}
//	    threshold: {count: 5, within: 10m}          # an alert opens at the 5th event in 10m
//	grouping: {group_by: [site, node], group_wait: 30s, group_interval: 5m, repeat_interval: 4h}
//	correlate:            # rules grouping: secondary alerts within window join the primary's group
//	  - {name: link, primary: {type: linkDown}, secondary: {type: ping}, window: 2m}
//	inhibit:              # a firing source alert mutes targets with the same equal fields
//	  - {source: {severity: critical}, target: {severity: warning}, equal: [node]}
//	flapping: {changes: 4, interval: 10m}
//	topology:             # alerts on related CIs first seen within window: one group (topology.go)
//	  {window: 5m, relations: [runs_on, depends_on, connected_to, contains]}
//	remediate:            # an alert that opens and matches starts a workflow (remediate.go)
//	  - {name: restart, match: {type: http_down}, workflow: restart-web, inputs: {host: "{node}"}}
//
// Match keys are the alert fields silences match (api.MatchKeys, additional.<k>).

// LoadError is one problem of a rule file.
type LoadError struct {
	File   string
	Line   int
	Reason string
}

func (e *LoadError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }

// matcher is a set of field conditions, all of which must hold.
type matcher []fieldCond

type fieldCond struct {
	field string
	value string
	re    *regexp.Regexp
}

func (m matcher) matches(get func(string) string) bool {
	for _, c := range m {
		v := get(c.field)
		if c.re != nil {
			if !c.re.MatchString(v) {
				return false
			}
		} else if v != c.value {
			return false
		}
	}
	return true
}

// Threshold holds an alert back until Count events of its key came within Within.
type Threshold struct {
	Count  int           `json:"count"`
	Within time.Duration `json:"within"`
}

type eventRule struct {
	name      string
	file      string
	line      int
	match     matcher
	ignore    bool
	transform map[string]string
	threshold *Threshold
}

// Grouping is Alertmanager's route grouping: alerts with equal GroupBy fields are one group,
// notified first GroupWait after it forms, then at most every GroupInterval when it
// changed, and every RepeatInterval when it did not.
type Grouping struct {
	GroupBy        []string
	GroupWait      time.Duration
	GroupInterval  time.Duration
	RepeatInterval time.Duration
}

// DefaultGrouping groups by node within a site, with Alertmanager's defaults.
func DefaultGrouping() Grouping {
	return Grouping{GroupBy: []string{"site", "node"}, GroupWait: 30 * time.Second, GroupInterval: 5 * time.Minute, RepeatInterval: 4 * time.Hour}
}

type correlateRule struct {
	name               string
	primary, secondary matcher
	window             time.Duration
}

type inhibitRule struct {
	source, target matcher
	equal          []string
}

// Flapping: an alert that changes state (opens, closes) Changes times within Interval is
// flapping: marked, and its group notified once, not at every change.
type Flapping struct {
	Changes  int
	Interval time.Duration
}

// ruleSet is every loaded file.
type ruleSet struct {
	files     []string
	events    []eventRule
	grouping  Grouping
	correlate []correlateRule
	inhibit   []inhibitRule
	flapping  *Flapping
	topology  Topology
	remediate []remediateRule

	mu      sync.Mutex
	ignored map[string]int64
}

// groupFields are the fields grouping may use: those of the dedup key, so that one key is
// always in one group — and so in one partition.
var groupFields = []string{"site", "source", "node", "type", "resource", "metric", "message_key"}

func newRuleSet() *ruleSet {
	return &ruleSet{grouping: DefaultGrouping(), topology: DefaultTopology(), ignored: map[string]int64{}}
}

// Topology is topology grouping: alerts whose CIs are linked by one of Relations (in the
// CMDB), first seen within Window of each other, are one group. No relations: off.
type Topology struct {
	Window    time.Duration
	Relations []string
}

// TopologyRelations are the relation types topology grouping knows how to read.
var TopologyRelations = []string{"runs_on", "depends_on", "connected_to", "contains"}

// DefaultTopology is every known relation within 5 minutes.
func DefaultTopology() Topology {
	return Topology{Window: 5 * time.Minute, Relations: slices.Clone(TopologyRelations)}
}

// remediateRule starts Workflow when an alert matching match opens, with inputs made of
// templates over the alert's fields ({node}, {id}, {alert}: the alert as JSON); without
// inputs, the alert as JSON in the input "alert".
type remediateRule struct {
	name     string
	match    matcher
	workflow string
	inputs   map[string]string
}

// LoadRules reads dir's *.yaml (sorted by name); an empty dir is the defaults (no event
// rules, DefaultGrouping). Every problem is reported (errors.Join of *LoadError).
func LoadRules(dir string) (*ruleSet, error) {
	rs := newRuleSet()
	if dir == "" {
		return rs, nil
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var errs []error
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("correlation rules: %w", err))
			continue
		}
		errs = append(errs, rs.add(p, b))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return rs, nil
}

// parseRules loads one file's text (tests, and LoadRules).
func parseRules(file string, data []byte) (*ruleSet, error) {
	rs := newRuleSet()
	if err := rs.add(file, data); err != nil {
		return nil, err
	}
	return rs, nil
}

func (rs *ruleSet) add(file string, data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return &LoadError{File: file, Line: yamlLine(err), Reason: err.Error()}
	}
	var errs []error
	bad := func(n *yaml.Node, format string, args ...any) {
		errs = append(errs, &LoadError{File: file, Line: n.Line, Reason: fmt.Sprintf(format, args...)})
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		bad(root, "want a mapping of event_rules, grouping, correlate, inhibit, flapping")
		return errors.Join(errs...)
	}
	eachKey(root, bad, []string{"event_rules", "grouping", "correlate", "inhibit", "flapping", "topology", "remediate"}, func(k string, v *yaml.Node) {
		switch k {
		case "event_rules":
			for _, n := range seq(v, bad, k) {
				if r, ok := rs.eventRule(file, n, bad); ok {
					rs.events = append(rs.events, r)
				}
			}
		case "grouping":
			rs.groupingOf(v, bad)
		case "correlate":
			for _, n := range seq(v, bad, k) {
				c := correlateRule{}
				eachKey(n, bad, []string{"name", "primary", "secondary", "window"}, func(k string, v *yaml.Node) {
					switch k {
					case "name":
						c.name = v.Value
					case "primary":
						c.primary = matcherOf(v, bad)
					case "secondary":
						c.secondary = matcherOf(v, bad)
					case "window":
						c.window = duration(v, bad)
					}
				})
				if len(c.primary) == 0 || len(c.secondary) == 0 || c.window <= 0 {
					bad(n, "correlate %q: needs primary, secondary (field matches) and a window above 0", c.name)
				}
				rs.correlate = append(rs.correlate, c)
			}
		case "inhibit":
			for _, n := range seq(v, bad, k) {
				in := inhibitRule{}
				eachKey(n, bad, []string{"source", "target", "equal"}, func(k string, v *yaml.Node) {
					switch k {
					case "source":
						in.source = matcherOf(v, bad)
					case "target":
						in.target = matcherOf(v, bad)
					case "equal":
						in.equal = fieldList(v, bad, nil)
					}
				})
				if len(in.source) == 0 || len(in.target) == 0 {
					bad(n, "inhibit: needs source and target (field matches)")
				}
				rs.inhibit = append(rs.inhibit, in)
			}
		case "flapping":
			f := &Flapping{}
			eachKey(v, bad, []string{"changes", "interval"}, func(k string, v *yaml.Node) {
				switch k {
				case "changes":
					f.Changes = intOf(v, bad)
				case "interval":
					f.Interval = duration(v, bad)
				}
			})
			if f.Changes < 2 || f.Interval <= 0 {
				bad(v, "flapping: changes must be at least 2 and interval above 0")
			}
			rs.flapping = f
		case "topology":
			t := DefaultTopology()
			eachKey(v, bad, []string{"window", "relations"}, func(k string, v *yaml.Node) {
				switch k {
				case "window":
					t.Window = duration(v, bad)
				case "relations":
					t.Relations = []string{}
					for _, n := range seq(v, bad, "relations") {
						if !slices.Contains(TopologyRelations, n.Value) {
							bad(n, "topology: relation %q: want one of %s", n.Value, strings.Join(TopologyRelations, ", "))
							continue
						}
						t.Relations = append(t.Relations, n.Value)
					}
				}
			})
			if t.Window <= 0 {
				bad(v, "topology: window must be above 0")
			}
			rs.topology = t
		case "remediate":
			for _, n := range seq(v, bad, k) {
				r := remediateRule{}
				eachKey(n, bad, []string{"name", "match", "workflow", "inputs"}, func(k string, v *yaml.Node) {
					switch k {
					case "name":
						r.name = v.Value
					case "match":
						r.match = matcherOf(v, bad)
					case "workflow":
						r.workflow = v.Value
					case "inputs":
						if v.Kind != yaml.MappingNode {
							bad(v, "remediate: inputs: want a mapping of input name to template")
							return
						}
						r.inputs = map[string]string{}
						for i := 0; i+1 < len(v.Content); i += 2 {
							r.inputs[v.Content[i].Value] = v.Content[i+1].Value
						}
					}
				})
				if r.name == "" || keyUnsafe.MatchString(r.name) {
					bad(n, "remediate: name %q: want letters, digits, - and _", r.name)
				}
				if r.workflow == "" {
					bad(n, "remediate %s: workflow is required (the name of an orchestration workflow)", r.name)
				}
				if len(r.match) == 0 {
					bad(n, "remediate %s: match is required: a rule without one would start a workflow for every alert", r.name)
				}
				rs.remediate = append(rs.remediate, r)
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	rs.files = append(rs.files, file)
	return nil
}

func (rs *ruleSet) eventRule(file string, n *yaml.Node, bad func(*yaml.Node, string, ...any)) (eventRule, bool) {
	r := eventRule{file: file, line: n.Line}
	eachKey(n, bad, []string{"name", "match", "ignore", "transform", "threshold"}, func(k string, v *yaml.Node) {
		switch k {
		case "name":
			r.name = v.Value
		case "match":
			r.match = matcherOf(v, bad)
		case "ignore":
			r.ignore = v.Value == "true"
			if v.Value != "true" && v.Value != "false" {
				bad(v, "ignore: want true or false, not %q", v.Value)
			}
		case "transform":
			r.transform = map[string]string{}
			eachKey(v, bad, transformable, func(k string, v *yaml.Node) {
				if k == "severity" && api.Rank(v.Value) < 0 {
					bad(v, "transform severity %q: want one of %s", v.Value, strings.Join(api.Severities, ", "))
				}
				for _, ref := range templateRef.FindAllStringSubmatch(v.Value, -1) {
					if !slices.Contains(api.MatchKeys, ref[1]) && !strings.HasPrefix(ref[1], "additional.") {
						bad(v, "transform %s: {%s} is not a field (want one of %s)", k, ref[1], strings.Join(api.MatchKeys, ", "))
					}
				}
				r.transform[k] = v.Value
			})
		case "threshold":
			t := &Threshold{}
			eachKey(v, bad, []string{"count", "within"}, func(k string, v *yaml.Node) {
				switch k {
				case "count":
					t.Count = intOf(v, bad)
				case "within":
					t.Within = duration(v, bad)
				}
			})
			if t.Count < 2 || t.Within <= 0 {
				bad(v, "threshold: count must be at least 2 and within above 0 (e.g. {count: 5, within: 10m})")
			}
			r.threshold = t
		}
	})
	if r.name == "" {
		bad(n, "event rule without a name")
	}
	if len(r.match) == 0 {
		bad(n, "event rule %q: match is required (an empty match would apply to every event)", r.name)
	}
	acts := 0
	for _, on := range []bool{r.ignore, r.transform != nil, r.threshold != nil} {
		if on {
			acts++
		}
	}
	if acts == 0 {
		bad(n, "event rule %q: give ignore, transform or threshold", r.name)
	}
	if r.ignore && acts > 1 {
		bad(n, "event rule %q: ignore drops the event: transform or threshold would never apply", r.name)
	}
	return r, true
}

func (rs *ruleSet) groupingOf(v *yaml.Node, bad func(*yaml.Node, string, ...any)) {
	g := &rs.grouping
	eachKey(v, bad, []string{"group_by", "group_wait", "group_interval", "repeat_interval"}, func(k string, v *yaml.Node) {
		switch k {
		case "group_by":
			g.GroupBy = fieldList(v, bad, groupFields)
		case "group_wait":
			g.GroupWait = duration(v, bad)
		case "group_interval":
			g.GroupInterval = duration(v, bad)
		case "repeat_interval":
			g.RepeatInterval = duration(v, bad)
		}
	})
	if g.GroupWait < 0 || g.GroupInterval <= 0 || g.RepeatInterval < g.GroupInterval {
		bad(v, "grouping: want group_wait ≥ 0, group_interval > 0 and repeat_interval ≥ group_interval")
	}
}

// transformable are the event fields a transform may set.
var transformable = []string{"node", "type", "resource", "metric", "severity", "message", "message_key"}

var templateRef = regexp.MustCompile(`\{([a-z_.A-Z0-9]+)\}`)

func eachKey(n *yaml.Node, bad func(*yaml.Node, string, ...any), known []string, f func(string, *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		bad(n, "want a mapping (keys: %s)", strings.Join(known, ", "))
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if known != nil && !slices.Contains(known, k.Value) {
			bad(k, "unknown key %q (known: %s)", k.Value, strings.Join(known, ", "))
			continue
		}
		f(k.Value, v)
	}
}

func seq(n *yaml.Node, bad func(*yaml.Node, string, ...any), what string) []*yaml.Node {
	if n.Kind != yaml.SequenceNode {
		bad(n, "%s: want a list", what)
		return nil
	}
	return n.Content
}

func matcherOf(n *yaml.Node, bad func(*yaml.Node, string, ...any)) matcher {
	var m matcher
	eachKey(n, bad, nil, func(k string, v *yaml.Node) {
		if !slices.Contains(api.MatchKeys, k) && !(strings.HasPrefix(k, "additional.") && len(k) > len("additional.")) {
			bad(v, "match key %q: want one of %s or additional.<key>", k, strings.Join(api.MatchKeys, ", "))
			return
		}
		c := fieldCond{field: k, value: v.Value}
		if rest, ok := strings.CutPrefix(v.Value, "~"); ok {
			re, err := regexp.Compile(rest)
			if err != nil {
				bad(v, "match %s: bad regex: %v", k, err)
				return
			}
			c.re = re
		}
		m = append(m, c)
	})
	sort.Slice(m, func(i, j int) bool { return m[i].field < m[j].field })
	return m
}

func fieldList(n *yaml.Node, bad func(*yaml.Node, string, ...any), allowed []string) []string {
	var out []string
	for _, v := range seq(n, bad, "field list") {
		if allowed != nil && !slices.Contains(allowed, v.Value) {
			bad(v, "field %q: want one of %s (the fields of the dedup key)", v.Value, strings.Join(allowed, ", "))
			continue
		}
		if allowed == nil && !slices.Contains(api.MatchKeys, v.Value) && !strings.HasPrefix(v.Value, "additional.") {
			bad(v, "field %q: want one of %s", v.Value, strings.Join(api.MatchKeys, ", "))
			continue
		}
		out = append(out, v.Value)
	}
	return out
}

func duration(n *yaml.Node, bad func(*yaml.Node, string, ...any)) time.Duration {
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		bad(n, "%q: want a duration such as 30s, 5m or 4h", n.Value)
	}
	return d
}

func intOf(n *yaml.Node, bad func(*yaml.Node, string, ...any)) int {
	var i int
	if err := n.Decode(&i); err != nil {
		bad(n, "%q: want a whole number", n.Value)
	}
	return i
}

var yamlLineRe = regexp.MustCompile(`line (\d+)`)

func yamlLine(err error) int {
	if m := yamlLineRe.FindStringSubmatch(err.Error()); m != nil {
		var n int
		_, _ = fmt.Sscan(m[1], &n)
		return n
	}
	return 0
}

// eventField is an event's value of a match key.
func eventField(ev *envelope.Event, k string) string {
	switch k {
	case "site":
		return ev.Site
	case "source":
		return ev.Source
	case "node":
		return ev.Node
	case "type":
		return ev.Type
	case "resource":
		return ev.Resource
	case "metric":
		return ev.Metric
	case "severity":
		return ev.Severity
	case "message_key":
		return ev.MessageKey
	case "message":
		return ev.Message
	}
	if rest, ok := strings.CutPrefix(k, "additional."); ok {
		return ev.Fields[rest]
	}
	return ""
}

// apply is the event-rules stage of the router: the first matching rule transforms the
// event or ignores it (its name returned: drop the event), and names the threshold the
// partition applies.
func (rs *ruleSet) apply(ev *envelope.Event) (ignoredBy string, th *Threshold) {
	get := func(k string) string { return eventField(ev, k) }
	for i := range rs.events {
		r := &rs.events[i]
		if !r.match.matches(get) {
			continue
		}
		if r.ignore {
			return r.name, nil
		}
		if r.transform != nil {
			set := map[string]string{}
			for k, tmpl := range r.transform {
				set[k] = templateRef.ReplaceAllStringFunc(tmpl, func(ref string) string { return get(ref[1 : len(ref)-1]) })
			}
			for k, v := range set {
				switch k {
				case "node":
					ev.Node = strings.ToLower(v)
				case "type":
					ev.Type = v
				case "resource":
					ev.Resource = v
				case "metric":
					ev.Metric = v
				case "severity":
					ev.Severity = v
				case "message":
					ev.Message = v
				case "message_key":
					ev.MessageKey = v
				}
			}
		}
		return "", r.threshold
	}
	return "", nil
}

func (rs *ruleSet) count(rule string) {
	rs.mu.Lock()
	rs.ignored[rule]++
	rs.mu.Unlock()
}

// Ignored is how many events each ignore rule dropped.
func (rs *ruleSet) Ignored() map[string]int64 {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make(map[string]int64, len(rs.ignored))
	for k, v := range rs.ignored {
		out[k] = v
	}
	return out
}

// groupKey is the group of an alert or event under the grouping's group_by: only the fields
// its dedup key has (a message_key event's node is not part of its key, so not of its group).
func (rs *ruleSet) groupKey(get func(string) string) string {
	var b strings.Builder
	keyed := get("message_key") != ""
	for _, f := range rs.grouping.GroupBy {
		if keyed && (f == "node" || f == "type" || f == "resource" || f == "metric") {
			continue
		}
		b.WriteString(f)
		b.WriteByte('=')
		b.WriteString(get(f))
		b.WriteByte('|')
	}
	return b.String()
}
