// Package classes holds the CMDB class model as data: the class hierarchy with typed
// attributes, the relation types, the identification families with their ordered rules,
// and the values that never identify anything.
//
// The defaults are embedded YAML (model/*.yaml); a deployment extends or replaces them from
// a directory (LoadDir) without a rebuild. A Model is immutable once loaded and safe for
// concurrent use.
package classes

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

//go:embed model/*.yaml
var defaults embed.FS

// Root is the class every other class descends from.
const Root = "ci"

// ClassAttribute is the pseudo-attribute a rule uses to put the item's class into an
// identifier (an application is identified by host + class + port).
const ClassAttribute = "class"

// reserved names cannot be attributes: history uses them for a CI's class, creation and
// staleness, and rules use "class" for the item's class.
func reserved(attr string) bool {
	switch attr {
	case ClassAttribute, "created", "stale":
		return true
	}
	return false
}

// Class is one class of the hierarchy.
type Class struct {
	Name        string
	Parent      string // empty for the root
	Abstract    bool   // no CI can have this class
	Description string
	// Attributes holds every attribute of the class, inherited ones included.
	Attributes map[string]Type
	// Family is the identification family of the class (the nearest ancestor-or-self that
	// roots a family); empty only for abstract classes above every family.
	Family string
	// Depth is the distance from the root (ci = 0); a deeper class is more specific.
	Depth int
}

// RelationType is a typed link From → To with the classes allowed at each end.
type RelationType struct {
	Name        string
	Description string
	From        []string // classes, each with all its subclasses
	To          []string
}

// Direction tells which end of a parent relation is the parent.
type Direction string

const (
	ParentToChild Direction = "parent_to_child" // host contains adapter
	ChildToParent Direction = "child_to_parent" // application runs_on host
)

// ParentRelation is the relation that links a dependent CI and the parent it is identified
// through; the engine records it so that the graph shows what the identification implies.
type ParentRelation struct {
	Type      string    `yaml:"type"`
	Direction Direction `yaml:"direction"`
}

// ChildSource takes identifier values from child items of a payload (a host's adapter MACs).
type ChildSource struct {
	Family    string `yaml:"family"`
	Attribute string `yaml:"attribute"`
}

// Rule is one identification rule of a family.
type Rule struct {
	Name         string       `yaml:"name"`
	Attributes   []string     `yaml:"attributes,omitempty"`
	Children     *ChildSource `yaml:"children,omitempty"`
	Single       bool         `yaml:"single,omitempty"`
	DetectShared bool         `yaml:"detect_shared,omitempty"`
	Reassignable bool         `yaml:"reassignable,omitempty"`
	AllowJunk    bool         `yaml:"allow_junk,omitempty"`
}

// Describe names what the rule needs, for error messages that say what to send.
func (r Rule) Describe() string {
	if r.Children != nil {
		return r.Children.Attribute + " of a " + r.Children.Family + " child"
	}
	return strings.Join(r.Attributes, "+")
}

// Family is a set of classes sharing identification rules: identifiers are unique within it.
type Family struct {
	Name           string          `yaml:"name"`
	Parents        []string        `yaml:"parents,omitempty"`
	ParentRelation *ParentRelation `yaml:"parent_relation,omitempty"`
	Rules          []Rule          `yaml:"rules"`
}

// Dependent reports whether CIs of the family are identified through a parent CI.
func (f *Family) Dependent() bool { return len(f.Parents) > 0 }

// Model is a loaded, validated class model.
type Model struct {
	classes    map[string]*Class
	children   map[string][]string
	relations  map[string]*RelationType
	families   map[string]*Family
	junk       map[string]struct{}
	searchable []string
}

// document is the shape of one YAML file; every section is optional.
type document struct {
	Classes          []classDoc    `yaml:"classes"`
	Relations        []relationDoc `yaml:"relations"`
	Families         []Family      `yaml:"families"`
	JunkValues       []string      `yaml:"junk_values"`
	SearchAttributes []string      `yaml:"search_attributes"`
}

type classDoc struct {
	Name        string          `yaml:"name"`
	Parent      string          `yaml:"parent"`
	Abstract    bool            `yaml:"abstract"`
	Description string          `yaml:"description"`
	Attributes  map[string]Type `yaml:"attributes"`
}

type relationDoc struct {
	Name        string   `yaml:"name"`
	Description string   `yaml:"description"`
	From        []string `yaml:"from"`
	To          []string `yaml:"to"`
}

// Default returns the embedded model.
func Default() (*Model, error) {
	return Load(nil)
}

// LoadDir returns the embedded model extended by the *.yaml files of dir (see Load).
func LoadDir(dir string, extraJunk ...string) (*Model, error) {
	return Load(os.DirFS(dir), extraJunk...)
}

// Load returns the embedded model extended by the *.yaml files at the root of override
// (nil for none), plus extra junk values. In the override, a class, relation type or family
// whose name already exists replaces the default one whole; junk values and search
// attributes are added.
func Load(override fs.FS, extraJunk ...string) (*Model, error) {
	var docs []document
	sub, err := fs.Sub(defaults, "model")
	if err != nil {
		return nil, fmt.Errorf("classes: embedded model: %w", err)
	}
	d, err := readDocs(sub)
	if err != nil {
		return nil, fmt.Errorf("classes: embedded model: %w", err)
	}
	docs = append(docs, d...)
	if override != nil {
		d, err := readDocs(override)
		if err != nil {
			return nil, fmt.Errorf("classes: override: %w", err)
		}
		docs = append(docs, d...)
	}
	docs = append(docs, document{JunkValues: extraJunk})
	return build(docs)
}

func readDocs(fsys fs.FS) ([]document, error) {
	names, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	docs := make([]document, 0, len(names))
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		var d document
		dec := yaml.NewDecoder(bytes.NewReader(b))
		// A typo in a model file must not silently drop a rule; an empty file is fine (EOF).
		dec.KnownFields(true)
		if err := dec.Decode(&d); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w", path.Base(name), err)
		}
		docs = append(docs, d)
	}
	return docs, nil
}

func build(docs []document) (*Model, error) {
	m := &Model{
		classes:   map[string]*Class{},
		children:  map[string][]string{},
		relations: map[string]*RelationType{},
		families:  map[string]*Family{},
		junk:      map[string]struct{}{},
	}
	raw := map[string]classDoc{}
	var order []string
	for _, d := range docs {
		for _, c := range d.Classes {
			if _, ok := raw[c.Name]; !ok {
				order = append(order, c.Name)
			}
			raw[c.Name] = c
		}
		for _, r := range d.Relations {
			m.relations[r.Name] = &RelationType{Name: r.Name, Description: r.Description, From: r.From, To: r.To}
		}
		for _, f := range d.Families {
			f := f
			m.families[f.Name] = &f
		}
		for _, j := range d.JunkValues {
			m.junk[normJunk(j)] = struct{}{}
		}
		for _, a := range d.SearchAttributes {
			if !slices.Contains(m.searchable, a) {
				m.searchable = append(m.searchable, a)
			}
		}
	}

	var errs []error
	for _, name := range order {
		c := raw[name]
		if name == "" {
			errs = append(errs, errors.New("a class has no name"))
			continue
		}
		if name != Root && c.Parent == "" {
			errs = append(errs, fmt.Errorf("class %s: no parent (only %s is the root)", name, Root))
		}
		if c.Parent != "" {
			if _, ok := raw[c.Parent]; !ok {
				errs = append(errs, fmt.Errorf("class %s: unknown parent %s", name, c.Parent))
			}
		}
		for attr, t := range c.Attributes {
			if !t.valid() {
				errs = append(errs, fmt.Errorf("class %s: attribute %s: unknown type %q (want %s)", name, attr, t, strings.Join(typeNames(), ", ")))
			}
			if reserved(attr) {
				errs = append(errs, fmt.Errorf("class %s: attribute name %q is reserved", name, attr))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Resolve inheritance from the root down so every class sees its ancestors' attributes.
	var resolve func(name string, seen map[string]bool) (*Class, error)
	resolve = func(name string, seen map[string]bool) (*Class, error) {
		if c, ok := m.classes[name]; ok {
			return c, nil
		}
		if seen[name] {
			return nil, fmt.Errorf("class %s: cycle in the hierarchy", name)
		}
		seen[name] = true
		d := raw[name]
		c := &Class{Name: name, Parent: d.Parent, Abstract: d.Abstract, Description: d.Description, Attributes: map[string]Type{}}
		if d.Parent != "" {
			p, err := resolve(d.Parent, seen)
			if err != nil {
				return nil, err
			}
			for a, t := range p.Attributes {
				c.Attributes[a] = t
			}
			c.Depth = p.Depth + 1
			c.Family = p.Family
		}
		for a, t := range d.Attributes {
			if old, ok := c.Attributes[a]; ok && old != t {
				return nil, fmt.Errorf("class %s: attribute %s is %s in an ancestor, cannot become %s", name, a, old, t)
			}
			c.Attributes[a] = t
		}
		if _, ok := m.families[name]; ok {
			c.Family = name
		}
		m.classes[name] = c
		return c, nil
	}
	for _, name := range order {
		if _, err := resolve(name, map[string]bool{}); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, name := range order {
		if p := m.classes[name].Parent; p != "" {
			m.children[p] = append(m.children[p], name)
		}
	}
	errs = append(errs, m.check()...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return m, nil
}

// check validates the cross references between classes, families and relation types.
func (m *Model) check() []error {
	var errs []error
	known := func(what, name string) {
		if _, ok := m.classes[name]; !ok {
			errs = append(errs, fmt.Errorf("%s: unknown class %s", what, name))
		}
	}
	for _, c := range m.sortedClasses() {
		if !c.Abstract && c.Family == "" {
			errs = append(errs, fmt.Errorf("class %s: not in any identification family (add a family for it or an ancestor)", c.Name))
		}
	}
	for _, r := range m.relations {
		if len(r.From) == 0 || len(r.To) == 0 {
			errs = append(errs, fmt.Errorf("relation %s: from and to must each list at least one class", r.Name))
		}
		for _, c := range r.From {
			known("relation "+r.Name+" from", c)
		}
		for _, c := range r.To {
			known("relation "+r.Name+" to", c)
		}
	}
	for _, f := range m.families {
		root, ok := m.classes[f.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("family %s: no class of that name roots it", f.Name))
			continue
		}
		if len(f.Rules) == 0 {
			errs = append(errs, fmt.Errorf("family %s: no identification rule", f.Name))
		}
		for _, p := range f.Parents {
			known("family "+f.Name+" parents", p)
		}
		if f.ParentRelation != nil {
			if !f.Dependent() {
				errs = append(errs, fmt.Errorf("family %s: parent_relation without parents", f.Name))
			}
			if _, ok := m.relations[f.ParentRelation.Type]; !ok {
				errs = append(errs, fmt.Errorf("family %s: unknown parent relation type %s", f.Name, f.ParentRelation.Type))
			}
			if f.ParentRelation.Direction != ParentToChild && f.ParentRelation.Direction != ChildToParent {
				errs = append(errs, fmt.Errorf("family %s: parent relation direction %q (want %s or %s)", f.Name, f.ParentRelation.Direction, ParentToChild, ChildToParent))
			}
		}
		names := map[string]bool{}
		for i, r := range f.Rules {
			where := fmt.Sprintf("family %s rule %d (%s)", f.Name, i, r.Name)
			if r.Name == "" || names[r.Name] {
				errs = append(errs, fmt.Errorf("%s: rules need unique names", where))
			}
			names[r.Name] = true
			switch {
			case r.Children != nil && len(r.Attributes) > 0:
				errs = append(errs, fmt.Errorf("%s: attributes and children are exclusive", where))
			case r.Children != nil:
				cf, ok := m.families[r.Children.Family]
				if !ok {
					errs = append(errs, fmt.Errorf("%s: unknown child family %s", where, r.Children.Family))
				} else if _, ok := m.classes[cf.Name].Attributes[r.Children.Attribute]; !ok && m.classes[cf.Name] != nil {
					errs = append(errs, fmt.Errorf("%s: child family %s has no attribute %s", where, cf.Name, r.Children.Attribute))
				}
				if f.Dependent() {
					errs = append(errs, fmt.Errorf("%s: a dependent family cannot use child identifiers", where))
				}
			case len(r.Attributes) == 0:
				errs = append(errs, fmt.Errorf("%s: needs attributes or children", where))
			}
			for _, a := range r.Attributes {
				if _, ok := root.Attributes[a]; !ok && a != ClassAttribute {
					errs = append(errs, fmt.Errorf("%s: class %s has no attribute %s", where, f.Name, a))
				}
			}
		}
	}
	return errs
}

// Class returns the named class.
func (m *Model) Class(name string) (*Class, bool) {
	c, ok := m.classes[name]
	return c, ok
}

// Classes returns every class, parents before children, siblings by name.
func (m *Model) Classes() []*Class { return m.sortedClasses() }

func (m *Model) sortedClasses() []*Class {
	out := make([]*Class, 0, len(m.classes))
	for _, c := range m.classes {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Depth != out[j].Depth {
			return out[i].Depth < out[j].Depth
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// IsA reports whether class is ancestor or one of its subclasses.
func (m *Model) IsA(class, ancestor string) bool {
	for c, ok := m.classes[class]; ok; c, ok = m.classes[c.Parent] {
		if c.Name == ancestor {
			return true
		}
	}
	return false
}

// IsAny reports whether class IsA one of ancestors.
func (m *Model) IsAny(class string, ancestors []string) bool {
	for _, a := range ancestors {
		if m.IsA(class, a) {
			return true
		}
	}
	return false
}

// Descendants returns name and all its subclasses, sorted; nil for an unknown class.
func (m *Model) Descendants(name string) []string {
	if _, ok := m.classes[name]; !ok {
		return nil
	}
	out := []string{name}
	for i := 0; i < len(out); i++ {
		out = append(out, m.children[out[i]]...)
	}
	sort.Strings(out)
	return out
}

// Family returns the identification family of a class.
func (m *Model) Family(class string) (*Family, bool) {
	c, ok := m.classes[class]
	if !ok || c.Family == "" {
		return nil, false
	}
	f, ok := m.families[c.Family]
	return f, ok
}

// Relation returns the named relation type.
func (m *Model) Relation(name string) (*RelationType, bool) {
	r, ok := m.relations[name]
	return r, ok
}

// RelationTypes returns every relation type name, sorted.
func (m *Model) RelationTypes() []string {
	out := make([]string, 0, len(m.relations))
	for n := range m.relations {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// SearchAttributes returns the attributes that text search looks at.
func (m *Model) SearchAttributes() []string { return slices.Clone(m.searchable) }

// IsJunk reports whether a value must never identify anything: blank, listed as junk
// (trimmed, case-insensitive), or one character repeated ("0000000").
func (m *Model) IsJunk(v string) bool {
	n := normJunk(v)
	if n == "" {
		return true
	}
	if _, ok := m.junk[n]; ok {
		return true
	}
	if len(n) >= 3 && strings.Count(n, n[:1]) == len(n) {
		return true
	}
	return false
}

func normJunk(v string) string { return strings.ToLower(strings.TrimSpace(v)) }

// RollUp turns counts per exact class into counts per class including subclasses.
func (m *Model) RollUp(exact map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for class, n := range exact {
		for c, ok := m.classes[class]; ok; c, ok = m.classes[c.Parent] {
			out[c.Name] += n
		}
	}
	return out
}
