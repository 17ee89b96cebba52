package mapping

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

	"go.yaml.in/yaml/v3"
)

//go:embed patterns/*.yaml
var embedded embed.FS

// Classes a pattern may give an application (the CMDB's application classes).
var Classes = []string{"web_server", "app_server", "database", "cache", "message_queue", "directory_server", "ldap_directory", "application"}

// Pattern recognises an application from its listening process and says where it connects.
type Pattern struct {
	Name  string `yaml:"name"`
	Class string `yaml:"class"`
	Match struct {
		Process string   `yaml:"process"`
		Args    string   `yaml:"args"`
		Ports   []int    `yaml:"ports"`
		Files   []string `yaml:"files"`
	} `yaml:"match"`
	// Vars: variable → regex on the command line whose group of that name gives its value.
	Vars        map[string]string `yaml:"vars"`
	Connections []ConnSpec        `yaml:"connections"`
	// Established: follow the process's established outbound connections (default true).
	Established *bool `yaml:"established"`

	File string `yaml:"-"`
	Line int    `yaml:"-"`

	process, args *regexp.Regexp
	vars          map[string]*regexp.Regexp
}

// ConnSpec is files to read and the regexes that find endpoints in them.
type ConnSpec struct {
	Files []string   `yaml:"files"`
	Find  []FindSpec `yaml:"find"`
}

// FindSpec is one regex with a `host` group and optionally a `port` group.
type FindSpec struct {
	Regex       string `yaml:"regex"`
	DefaultPort int    `yaml:"default_port"`
	re          *regexp.Regexp
}

// Patterns is a loaded, checked set of pattern files.
type Patterns struct {
	List  []*Pattern
	Files []string
}

// LoadError is a refused pattern file, with where and why.
type LoadError struct {
	File   string
	Line   int
	Reason string
}

func (e *LoadError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }

var varRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// LoadPatterns reads the embedded files, then dir's *.yaml (a file with an embedded file's
// name replaces it). Every problem of every file is reported (errors.Join of *LoadError).
func LoadPatterns(dir string) (*Patterns, error) {
	files := map[string][]byte{}
	shown := map[string]string{}
	ents, _ := fs.ReadDir(embedded, "patterns")
	for _, e := range ents {
		b, err := embedded.ReadFile("patterns/" + e.Name())
		if err != nil {
			return nil, err
		}
		files[e.Name()], shown[e.Name()] = b, "embedded:patterns/"+e.Name()
	}
	if dir != "" {
		m, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			return nil, err
		}
		for _, p := range m {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("patterns: %w", err)
			}
			files[filepath.Base(p)], shown[filepath.Base(p)] = b, p
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	// embedded files first (an override keeps its place), then the directory's: a duplicate
	// name is reported in the file that came second
	sort.Slice(names, func(i, j int) bool {
		ei, ej := strings.HasPrefix(shown[names[i]], "embedded:") || isEmbedded(names[i]), strings.HasPrefix(shown[names[j]], "embedded:") || isEmbedded(names[j])
		if ei != ej {
			return ei
		}
		return names[i] < names[j]
	})
	ps := &Patterns{}
	var errs []error
	seen := map[string]string{}
	for _, n := range names {
		list, err := parsePatterns(shown[n], files[n])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, p := range list {
			if where, dup := seen[p.Name]; dup {
				errs = append(errs, &LoadError{File: p.File, Line: p.Line, Reason: fmt.Sprintf("pattern %s: already defined at %s; give it another name or replace that file", p.Name, where)})
				continue
			}
			seen[p.Name] = fmt.Sprintf("%s:%d", p.File, p.Line)
			ps.List = append(ps.List, p)
		}
		ps.Files = append(ps.Files, shown[n])
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ps, nil
}

func isEmbedded(name string) bool {
	_, err := fs.Stat(embedded, "patterns/"+name)
	return err == nil
}

var lineRE = regexp.MustCompile(`line (\d+)`)

func yamlLine(err error) int {
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 1
}

func parsePatterns(file string, data []byte) ([]*Pattern, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &LoadError{File: file, Line: yamlLine(err), Reason: err.Error()}
	}
	var spec struct {
		Patterns []*Pattern `yaml:"patterns"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&spec); err != nil && !errors.Is(err, io.EOF) {
		return nil, &LoadError{File: file, Line: yamlLine(err), Reason: err.Error()}
	}
	var lines []int
	if len(root.Content) > 0 && root.Content[0].Kind == yaml.MappingNode {
		m := root.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "patterns" {
				for _, it := range m.Content[i+1].Content {
					lines = append(lines, it.Line)
				}
			}
		}
	}
	var errs []error
	for i, p := range spec.Patterns {
		p.File = file
		if i < len(lines) {
			p.Line = lines[i]
		}
		bad := func(format string, args ...any) {
			errs = append(errs, &LoadError{File: file, Line: p.Line, Reason: fmt.Sprintf("pattern %s: ", cmpOr(p.Name, "#"+strconv.Itoa(i+1))) + fmt.Sprintf(format, args...)})
		}
		p.check(bad)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return spec.Patterns, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (p *Pattern) check(bad func(string, ...any)) {
	comp := func(what, s string) *regexp.Regexp {
		if s == "" {
			return nil
		}
		re, err := regexp.Compile(s)
		if err != nil {
			bad("%s: bad regex: %v", what, err)
		}
		return re
	}
	if p.Name == "" {
		bad("no name: give the application's name (nginx, tomcat…)")
	}
	if !slices.Contains(Classes, p.Class) {
		bad("class %q: want one of %s", p.Class, strings.Join(Classes, ", "))
	}
	if p.Match.Process == "" && p.Match.Args == "" && len(p.Match.Ports) == 0 {
		bad("match needs process, args or ports: a pattern that matches everything would name every process")
	}
	p.process, p.args = comp("match.process", p.Match.Process), comp("match.args", p.Match.Args)
	for _, port := range p.Match.Ports {
		if port < 1 || port > 65535 {
			bad("match.ports: %d is not a TCP port", port)
		}
	}
	p.vars = map[string]*regexp.Regexp{}
	for name, s := range p.Vars {
		re := comp("vars."+name, s)
		if re != nil && re.SubexpIndex(name) < 0 {
			bad("vars.%s: the regex has no group named %s (write (?P<%s>…))", name, name, name)
		}
		p.vars[name] = re
	}
	checkPaths := func(what string, paths []string) {
		for _, f := range paths {
			if !strings.HasPrefix(f, "/") && !strings.HasPrefix(f, "${") {
				bad("%s: %q is not an absolute path", what, f)
			}
			for _, m := range varRE.FindAllStringSubmatch(f, -1) {
				if _, ok := p.vars[m[1]]; !ok && m[1] != "port" && m[1] != "pid" {
					bad("%s: %q uses ${%s}, which vars does not define (known: port, pid and vars)", what, f, m[1])
				}
			}
			if strings.ContainsAny(f, " \t\n;|&'\"`") {
				bad("%s: %q: paths may not hold spaces, quotes or shell operators", what, f)
			}
		}
	}
	checkPaths("match.files", p.Match.Files)
	for i := range p.Connections {
		c := &p.Connections[i]
		what := fmt.Sprintf("connections[%d]", i)
		if len(c.Files) == 0 {
			bad("%s: no files to read", what)
		}
		checkPaths(what+".files", c.Files)
		if len(c.Find) == 0 {
			bad("%s: no find regexes", what)
		}
		for j := range c.Find {
			f := &c.Find[j]
			f.re = comp(fmt.Sprintf("%s.find[%d]", what, j), f.Regex)
			if f.Regex == "" {
				bad("%s.find[%d]: no regex", what, j)
			}
			if f.re != nil && f.re.SubexpIndex("host") < 0 {
				bad("%s.find[%d]: the regex has no group named host (write (?P<host>…))", what, j)
			}
			if f.re != nil && f.re.SubexpIndex("port") < 0 && f.DefaultPort == 0 {
				bad("%s.find[%d]: no port group and no default_port", what, j)
			}
			if f.DefaultPort < 0 || f.DefaultPort > 65535 {
				bad("%s.find[%d]: default_port %d is not a TCP port", what, j, f.DefaultPort)
			}
		}
	}
}

// followsEstablished says whether the pattern follows established connections.
func (p *Pattern) followsEstablished() bool {
	return p == nil || p.Established == nil || *p.Established
}

// candidate says whether the process matches the pattern's process, args and ports.
func (p *Pattern) candidate(comm, args string, port int) bool {
	if p.process != nil && !p.process.MatchString(comm) {
		return false
	}
	if p.args != nil && !p.args.MatchString(args) {
		return false
	}
	if len(p.Match.Ports) > 0 && !slices.Contains(p.Match.Ports, port) {
		return false
	}
	return true
}

// expand gives the variables of a process: its vars captured from the command line, port and pid.
func (p *Pattern) variables(args string, port, pid int) map[string]string {
	v := map[string]string{"port": strconv.Itoa(port), "pid": strconv.Itoa(pid)}
	for name, re := range p.vars {
		if re == nil {
			continue
		}
		if m := re.FindStringSubmatch(args); m != nil && m[re.SubexpIndex(name)] != "" {
			v[name] = m[re.SubexpIndex(name)]
		}
	}
	return v
}

// expandPath fills ${variables}; ok is false when one is unknown (the path is skipped).
func expandPath(path string, vars map[string]string) (string, bool) {
	ok := true
	out := varRE.ReplaceAllStringFunc(path, func(m string) string {
		v, found := vars[m[2:len(m)-1]]
		if !found {
			ok = false
		}
		return v
	})
	return out, ok
}
