// Package transform loads transform maps (YAML) and applies them to staged rows: each row
// becomes a CI payload for the CMDB's identification and reconciliation, or an outcome of
// its own (ignored, skipped, error) with the reason.
package transform

import (
	"fmt"
	"slices"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
)

// Model is the part of the CMDB's class model a map is checked against: classes with their
// typed attributes, identification families, relation types. It is read from the CMDB
// (svc.cmdb.classes), never compiled in: a deployment's own classes count.
type Model struct {
	Classes   map[string]Class
	Families  map[string]Family
	Relations map[string]Relation
}

// Class is a CI class: its attributes (inherited included) with their types (string, int,
// float, bool, time, list, mac).
type Class struct {
	Name       string
	Abstract   bool
	Family     string
	Attributes map[string]string
}

// Family is an identification family. Rules holds the attribute sets of its attribute rules
// in order (rules on child items are left out: a map cannot coalesce on them). A dependent
// family's CIs are identified through a parent (Parents).
type Family struct {
	Name    string
	Parents []string
	Rules   [][]string
}

// Relation is a relation type.
type Relation struct {
	Name     string
	From, To []string
}

// ModelFromClasses builds the model from the CMDB's classes answer (svc.cmdb.classes).
// Only attribute rules count for coalesce: a rule on child items (a host's adapter MACs)
// cannot be coalesced on by a map.
func ModelFromClasses(resp cmdbapi.ClassesResponse) (*Model, error) {
	m := &Model{Classes: map[string]Class{}, Families: map[string]Family{}, Relations: map[string]Relation{}}
	for _, c := range resp.Classes {
		m.Classes[c.Name] = Class{Name: c.Name, Abstract: c.Abstract, Family: c.Family, Attributes: c.Attributes}
	}
	for _, r := range resp.Relations {
		m.Relations[r.Name] = Relation{Name: r.Name, From: r.From, To: r.To}
	}
	for _, f := range resp.Families {
		fam := Family{Name: f.Name, Parents: f.Parents}
		for _, r := range f.Rules {
			if r.Child != nil || len(r.Attributes) == 0 {
				continue
			}
			fam.Rules = append(fam.Rules, slices.Clone(r.Attributes))
		}
		m.Families[f.Name] = fam
	}
	if len(m.Classes) == 0 {
		return nil, fmt.Errorf("the CMDB's class model has no class")
	}
	return m, nil
}

// identifiedBy returns the attribute sets a class's family identifies by, "class" left out.
func (m *Model) identifiedBy(class string) [][]string {
	c := m.Classes[class]
	var out [][]string
	for _, r := range m.Families[c.Family].Rules {
		out = append(out, slices.DeleteFunc(slices.Clone(r), func(a string) bool { return a == "class" }))
	}
	return out
}

// dependent reports whether a class's CIs are identified through a parent CI.
func (m *Model) dependent(class string) (parents []string, ok bool) {
	f := m.Families[m.Classes[class].Family]
	return f.Parents, len(f.Parents) > 0
}

// classNames lists the concrete classes, for error messages.
func (m *Model) classNames() []string {
	out := make([]string, 0, len(m.Classes))
	for n, c := range m.Classes {
		if !c.Abstract {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
