package discovery

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"go.yaml.in/yaml/v3"

	"github.com/outpost-dev/outpost/libs/probes/catalog"
)

//go:embed classifiers/*.yaml
var embedded embed.FS

// ProbeSpec is a probe a classifier set runs: in the classify phase when its When matches
// what answered, or in the explore phase of a matched classifier.
type ProbeSpec struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"`
	When Match  `yaml:"when"`
	// PerPort sends one probe per open port among these (params get "port").
	PerPort []int `yaml:"per_port"`
	// Credentials is the credential type the probe carries (ssh, snmp, ldap…), affinity first.
	Credentials string `yaml:"credentials"`
	// Sweep: in the scan phase, sent to every address of the range (config SNMPEveryAddress).
	Sweep  bool           `yaml:"sweep"`
	Params map[string]any `yaml:"params"`
	line   int
}

// Match is a set of conditions, all of which must hold (an empty Match always holds).
type Match struct {
	PortsAny    []int             `yaml:"ports_any"`
	PortsAll    []int             `yaml:"ports_all"`
	MinPorts    int               `yaml:"min_ports_of"` // with PortsAny: at least this many of them
	Banner      string            `yaml:"banner"`       // regex on the SSH version or HTTP Server header
	SysDescr    string            `yaml:"sys_descr"`
	SysObjectID string            `yaml:"sys_object_id"`
	Output      map[string]string `yaml:"output"` // command → regex on its stdout
	SSHFailed   *bool             `yaml:"ssh_failed"`
	SNMP        *bool             `yaml:"snmp"` // answered SNMP
	Expr        string            `yaml:"expr"` // expr-lang boolean over the facts

	banner, sysDescr, sysOID *regexp.Regexp
	output                   map[string]*regexp.Regexp
	prog                     *vm.Program
}

// Extract is how one attribute is read from the facts: a regex (first group, or the whole
// match) on a source, or an expr-lang expression.
type Extract struct {
	From  string `yaml:"from"` // ssh:<command>, snmp:<oid>, http:server, http:title, banner
	Regex string `yaml:"regex"`
	Expr  string `yaml:"expr"`
	Type  string `yaml:"type"` // string (default), int, bool

	re   *regexp.Regexp
	prog *vm.Program
}

// Classifier turns facts into a class, attributes and further probes.
type Classifier struct {
	Name     string             `yaml:"name"`
	Class    string             `yaml:"class"`
	Priority int                `yaml:"priority"`
	Match    Match              `yaml:"match"`
	Extract  map[string]Extract `yaml:"extract"`
	Explore  []ProbeSpec        `yaml:"explore"`
	// Evidence is what the class rests on: credentialed (an OS probe that logged in), snmp
	// (the agent's system group), ports. When identification merges the payloads of two
	// addresses of one machine, the CMDB keeps the class of the stronger evidence.
	Evidence string `yaml:"evidence"`
	// Host is the class of the device an application class (web_server, directory_server)
	// is found on when nothing better is known (default "server").
	Host string `yaml:"host"`
	file string
	line int
}

// AppRule maps a listening process to an application CI.
type AppRule struct {
	Process string `yaml:"process"` // regex on the process name
	Class   string `yaml:"class"`   // web_server, database, …
	Name    string `yaml:"name"`
	Engine  string `yaml:"engine"`
	re      *regexp.Regexp
}

// ObjectID says what a sysObjectID enterprise prefix means: whose agent it is and what kind
// of device it runs on. Real estates are classified this way before anything else SNMP
// says (a net-snmp agent on a Linux host reports ipForwarding like a router would).
type ObjectID struct {
	Prefix string `yaml:"prefix"` // numeric OID, no leading dot; the longest matching prefix wins
	Vendor string `yaml:"vendor"`
	Kind   string `yaml:"kind"` // one of objectKinds
	line   int
}

// evidenceKinds are what a classifier's class may rest on ("" says nothing).
var evidenceKinds = []string{"", "credentialed", "snmp", "ports"}

// objectKinds are the device kinds a sysObjectID prefix may name.
var objectKinds = []string{"linux_host", "windows_host", "unix_host", "network", "printer"}

// fileSpec is one classifier file.
type fileSpec struct {
	Probes       []ProbeSpec  `yaml:"probes"`
	ObjectIDs    []ObjectID   `yaml:"sys_object_ids"`
	Classifiers  []Classifier `yaml:"classifiers"`
	Applications []AppRule    `yaml:"applications"`
}

// Ruleset is a loaded, checked set of classifier files.
type Ruleset struct {
	Probes       []ProbeSpec
	ObjectIDs    []ObjectID
	Classifiers  []Classifier // by priority, highest first
	Applications []AppRule
	Files        []string
}

var numericOID = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)

// LookupObjectID is the entry of the longest prefix of oid (leading dot ignored); nil when
// no entry matches.
func (rs *Ruleset) LookupObjectID(oid string) *ObjectID {
	oid = strings.TrimPrefix(oid, ".")
	var best *ObjectID
	for i := range rs.ObjectIDs {
		e := &rs.ObjectIDs[i]
		if (oid == e.Prefix || strings.HasPrefix(oid, e.Prefix+".")) && (best == nil || len(e.Prefix) > len(best.Prefix)) {
			best = e
		}
	}
	return best
}

// knownKinds are the probe kinds a classifier may name.
func knownKind(k string) bool { _, ok := catalog.Lookup(k); return ok }

// knownClasses are the CMDB classes discovery may report as a device or application.
var knownClasses = []string{"linux_server", "windows_server", "unix_server", "server", "ip_switch", "ip_router",
	"network_gear", "printer", "computer", "hardware", "web_server", "database", "directory_server", "ldap_directory", "application"}

var applicationClasses = []string{"web_server", "database", "directory_server", "ldap_directory", "application"}

// LoadError is a refused classifier file, with where and why.
type LoadError struct {
	File   string
	Line   int
	Reason string
}

func (e *LoadError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }

// LoadRuleset reads the embedded files, then dir's *.yaml (a file with an embedded file's
// name replaces it). Every problem is reported (errors.Join of *LoadError).
func LoadRuleset(dir string) (*Ruleset, error) {
	files := map[string][]byte{}
	ents, _ := fs.ReadDir(embedded, "classifiers")
	for _, e := range ents {
		b, err := embedded.ReadFile("classifiers/" + e.Name())
		if err != nil {
			return nil, err
		}
		files[e.Name()] = b
	}
	paths := map[string]string{}
	if dir != "" {
		m, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			return nil, err
		}
		for _, p := range m {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("classifiers: %w", err)
			}
			files[filepath.Base(p)] = b
			paths[filepath.Base(p)] = p
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	rs := &Ruleset{}
	var errs []error
	for _, n := range names {
		shown := n
		if p, ok := paths[n]; ok {
			shown = p
		} else {
			shown = "embedded:classifiers/" + n
		}
		if err := rs.add(shown, files[n]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sort.SliceStable(rs.Classifiers, func(i, j int) bool { return rs.Classifiers[i].Priority > rs.Classifiers[j].Priority })
	return rs, nil
}

func (rs *Ruleset) add(file string, data []byte) error {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := yaml.Unmarshal(data, &root); err != nil {
		return &LoadError{File: file, Line: yamlLine(err), Reason: err.Error()}
	}
	var spec fileSpec
	if err := dec.Decode(&spec); err != nil && !errors.Is(err, io.EOF) {
		return &LoadError{File: file, Line: yamlLine(err), Reason: err.Error()}
	}
	lines := nodeLines(&root)
	var errs []error
	bad := func(line int, format string, args ...any) {
		errs = append(errs, &LoadError{File: file, Line: line, Reason: fmt.Sprintf(format, args...)})
	}
	for i := range spec.Probes {
		p := &spec.Probes[i]
		p.line = lines["probes"][i]
		checkProbe(p, "probe "+p.Name, bad)
	}
	for i := range spec.ObjectIDs {
		o := &spec.ObjectIDs[i]
		o.line = lines["sys_object_ids"][i]
		o.Prefix = strings.TrimPrefix(o.Prefix, ".")
		if !numericOID.MatchString(o.Prefix) {
			bad(o.line, "sys_object_ids: prefix %q is not a numeric OID (like 1.3.6.1.4.1.9)", o.Prefix)
		}
		if !slices.Contains(objectKinds, o.Kind) {
			bad(o.line, "sys_object_ids %s: unknown kind %q (known: %s)", o.Prefix, o.Kind, strings.Join(objectKinds, ", "))
		}
	}
	for i := range spec.Classifiers {
		c := &spec.Classifiers[i]
		c.file, c.line = file, lines["classifiers"][i]
		what := "classifier " + c.Name
		if c.Name == "" {
			bad(c.line, "classifier without a name")
		}
		if !slices.Contains(knownClasses, c.Class) {
			bad(c.line, "%s: unknown class %q (known: %s)", what, c.Class, strings.Join(knownClasses, ", "))
		}
		if c.Host != "" && !slices.Contains(knownClasses, c.Host) {
			bad(c.line, "%s: unknown host class %q", what, c.Host)
		}
		checkMatch(&c.Match, c.line, what, bad)
		if !slices.Contains(evidenceKinds, c.Evidence) {
			bad(c.line, "%s: evidence %q: want one of %s", what, c.Evidence, strings.Join(evidenceKinds[1:], ", "))
		}
		for attr, ex := range c.Extract {
			if ex.Regex == "" && ex.Expr == "" {
				bad(c.line, "%s: extract %s: give a regex or an expr", what, attr)
			}
			if ex.Regex != "" {
				re, err := regexp.Compile(ex.Regex)
				if err != nil {
					bad(c.line, "%s: extract %s: bad regex: %v", what, attr, err)
				}
				ex.re = re
				if ex.From == "" {
					bad(c.line, "%s: extract %s: a regex needs from (ssh:CMD, snmp:OID, http:server, http:title, banner)", what, attr)
				}
			}
			if ex.Expr != "" {
				prog, err := expr.Compile(ex.Expr, expr.Env(exprEnv(&Facts{})))
				if err != nil {
					bad(c.line, "%s: extract %s: bad expr: %v", what, attr, oneLine(err))
				}
				ex.prog = prog
			}
			switch ex.Type {
			case "", "string", "int", "bool":
			default:
				bad(c.line, "%s: extract %s: type %q: want string, int or bool", what, attr, ex.Type)
			}
			c.Extract[attr] = ex
		}
		for j := range c.Explore {
			checkProbe(&c.Explore[j], what+" explore "+c.Explore[j].Name, func(_ int, f string, a ...any) { bad(c.line, f, a...) })
		}
	}
	for i := range spec.Applications {
		a := &spec.Applications[i]
		line := lines["applications"][i]
		re, err := regexp.Compile(a.Process)
		if err != nil {
			bad(line, "application %s: bad process regex: %v", a.Name, err)
		}
		a.re = re
		if !slices.Contains(applicationClasses, a.Class) {
			bad(line, "application %s: class %q is not an application class", a.Name, a.Class)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	rs.Probes = append(rs.Probes, spec.Probes...)
	rs.ObjectIDs = append(rs.ObjectIDs, spec.ObjectIDs...)
	rs.Classifiers = append(rs.Classifiers, spec.Classifiers...)
	rs.Applications = append(rs.Applications, spec.Applications...)
	rs.Files = append(rs.Files, file)
	return nil
}

func checkProbe(p *ProbeSpec, what string, bad func(int, string, ...any)) {
	if !knownKind(p.Kind) {
		bad(p.line, "%s: unknown probe kind %q", what, p.Kind)
	}
	checkMatch(&p.When, p.line, what, bad)
}

func checkMatch(m *Match, line int, what string, bad func(int, string, ...any)) {
	comp := func(name, s string) *regexp.Regexp {
		if s == "" {
			return nil
		}
		re, err := regexp.Compile(s)
		if err != nil {
			bad(line, "%s: %s: bad regex: %v", what, name, err)
		}
		return re
	}
	m.banner, m.sysDescr, m.sysOID = comp("banner", m.Banner), comp("sys_descr", m.SysDescr), comp("sys_object_id", m.SysObjectID)
	m.output = map[string]*regexp.Regexp{}
	for cmd, r := range m.Output {
		m.output[cmd] = comp("output "+cmd, r)
	}
	if m.Expr != "" {
		prog, err := expr.Compile(m.Expr, expr.Env(exprEnv(&Facts{})), expr.AsBool())
		if err != nil {
			bad(line, "%s: bad expr: %v", what, oneLine(err))
		}
		m.prog = prog
	}
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

var lineRE = regexp.MustCompile(`line (\d+)`)

func yamlLine(err error) int {
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 1
}

// nodeLines maps each top-level list section to the line of each of its items.
func nodeLines(root *yaml.Node) map[string][]int {
	out := map[string][]int{}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return out
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		key, val := m.Content[i].Value, m.Content[i+1]
		for _, it := range val.Content {
			out[key] = append(out[key], it.Line)
		}
	}
	return out
}

// Matches says whether the facts satisfy m.
func (m *Match) Matches(f *Facts) bool {
	if len(m.PortsAny) > 0 {
		n := 0
		for _, p := range m.PortsAny {
			if f.HasPort(p) {
				n++
			}
		}
		if n == 0 || n < m.MinPorts {
			return false
		}
	}
	for _, p := range m.PortsAll {
		if !f.HasPort(p) {
			return false
		}
	}
	if m.banner != nil && !m.banner.MatchString(f.Banner()) {
		return false
	}
	if m.sysDescr != nil && !m.sysDescr.MatchString(f.SNMPString(oidSysDescr)) {
		return false
	}
	if m.sysOID != nil && !m.sysOID.MatchString(strings.TrimPrefix(f.SNMPString(oidSysObjectID), ".")) {
		return false
	}
	for cmd, re := range m.output {
		out, ok := f.SSH[cmd]
		if !ok || re == nil || !re.MatchString(out) {
			return false
		}
	}
	if m.SSHFailed != nil && *m.SSHFailed != f.SSHFailed {
		return false
	}
	if m.SNMP != nil && *m.SNMP != (len(f.SNMP) > 0) {
		return false
	}
	if m.prog != nil {
		v, err := expr.Run(m.prog, exprEnv(f))
		if b, ok := v.(bool); err != nil || !ok || !b {
			return false
		}
	}
	return true
}

// Classify picks the highest-priority classifier that matches. The facts learn what their
// sysObjectID means (oid_kind(), oid_vendor() in expressions) first.
func (rs *Ruleset) Classify(f *Facts) *Classifier {
	f.object = rs.LookupObjectID(f.SNMPString(oidSysObjectID))
	for i := range rs.Classifiers {
		if rs.Classifiers[i].Match.Matches(f) {
			return &rs.Classifiers[i]
		}
	}
	return nil
}

// Attributes extracts the classifier's attributes from the facts (missing values are left out).
func (c *Classifier) Attributes(f *Facts) map[string]any {
	out := map[string]any{}
	for attr, ex := range c.Extract {
		var v any
		if ex.prog != nil {
			r, err := expr.Run(ex.prog, exprEnv(f))
			if err != nil || r == nil {
				continue
			}
			v = r
		} else {
			src := f.Source(ex.From)
			m := ex.re.FindStringSubmatch(src)
			if m == nil {
				continue
			}
			s := m[0]
			if len(m) > 1 {
				s = m[1]
			}
			v = strings.TrimSpace(s)
		}
		switch ex.Type {
		case "int":
			switch x := v.(type) {
			case int:
			case float64:
				v = int(x)
			default:
				n, err := strconv.Atoi(strings.TrimSpace(fmt.Sprint(v)))
				if err != nil {
					continue
				}
				v = n
			}
		case "bool":
			if _, ok := v.(bool); !ok {
				b, err := strconv.ParseBool(fmt.Sprint(v))
				if err != nil {
					continue
				}
				v = b
			}
		default:
			v = strings.TrimSpace(fmt.Sprint(v))
			if v == "" {
				continue
			}
		}
		out[attr] = v
	}
	return out
}

// Classifiers is the live ruleset; Reload swaps it only when the new set loads cleanly.
type Classifiers struct {
	dir string
	cur atomic.Pointer[Ruleset]
}

// NewClassifiers loads the ruleset once; the embedded set must load.
func NewClassifiers(dir string) (*Classifiers, error) {
	rs, err := LoadRuleset(dir)
	if err != nil {
		return nil, err
	}
	c := &Classifiers{dir: dir}
	c.cur.Store(rs)
	return c, nil
}

// Current is the ruleset in use.
func (c *Classifiers) Current() *Ruleset { return c.cur.Load() }

// Reload reads the files again. On any error the previous good set stays in use and the
// error (file:line: reason) is returned.
func (c *Classifiers) Reload() error {
	rs, err := LoadRuleset(c.dir)
	if err != nil {
		return err
	}
	c.cur.Store(rs)
	return nil
}
