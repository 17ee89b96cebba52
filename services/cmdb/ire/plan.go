package ire

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
)

// attrValue is an attribute value checked against its class: canonical Go value and the
// JSON text stored and compared.
type attrValue struct {
	canonical any
	json      string
}

// item is a validated payload item.
type item struct {
	idx      int
	raw      envelope.CIItem
	class    *classes.Class
	family   *classes.Family
	parent   *item
	children []*item
	depth    int
	attrs    map[string]attrValue
	// values holds, per rule of the family, the identifier values the item offers (for a
	// dependent family, without the parent id that prefixes them once the parent is known).
	values [][]string
	native string
}

// relation is a validated payload relation.
type relation struct {
	typ      string
	from, to *item
}

// plan is a validated payload, ready for identification.
type plan struct {
	source    string
	observed  time.Time
	items     []*item
	levels    [][]*item // by depth in the parent chain: parents before their children
	relations []relation
}

// validate checks a payload against the class model and returns every problem at once.
func (e *Engine) validate(p envelope.CIPayload) (*plan, error) {
	var errs []FieldError
	add := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	m := e.model
	pl := &plan{source: strings.TrimSpace(p.Source), observed: p.Observed.UTC()}
	if pl.source == "" {
		add("source", "required: the name of the source that observed the items (discovery, sccm, manual…)")
	}
	if p.Observed.IsZero() {
		pl.observed = e.now().UTC()
	}
	if len(p.Items) == 0 {
		add("items", "empty: a payload needs at least one item")
	}

	byRef := make(map[string]*item, len(p.Items))
	pl.items = make([]*item, 0, len(p.Items))
	pl.relations = make([]relation, 0, len(p.Relations))
	for i, raw := range p.Items {
		f := itemField(i)
		it := &item{idx: i, raw: raw, attrs: make(map[string]attrValue, len(raw.Attributes)), native: strings.TrimSpace(raw.NativeKey)}
		pl.items = append(pl.items, it)
		switch {
		case raw.Ref == "":
			add(f.sub(".ref"), "required: a name for the item, unique in the payload")
		case byRef[raw.Ref] != nil:
			add(f.sub(".ref"), "duplicate %q (also items[%d])", raw.Ref, byRef[raw.Ref].idx)
		default:
			byRef[raw.Ref] = it
		}
		c, ok := m.Class(raw.Class)
		if !ok {
			add(f.sub(".class"), "unknown class %q", raw.Class)
			continue
		}
		if c.Abstract {
			add(f.sub(".class"), "%s is abstract: use one of its subclasses", raw.Class)
			continue
		}
		it.class = c
		it.family, _ = m.Family(c.Name)
		names := make([]string, 0, len(raw.Attributes))
		for a := range raw.Attributes {
			names = append(names, a)
		}
		sort.Strings(names)
		for _, a := range names {
			v := raw.Attributes[a]
			t, ok := c.Attributes[a]
			if !ok {
				add(f.attr(a), "unknown attribute of class %s", c.Name)
				continue
			}
			if v == nil {
				continue // null means "not observed", never "erase"
			}
			cv, err := t.Canonical(v)
			if err != nil {
				add(f.attr(a), "%v", err)
				continue
			}
			js, err := classes.Encode(cv)
			if err != nil {
				add(f.attr(a), "%v", err)
				continue
			}
			it.attrs[a] = attrValue{canonical: cv, json: js}
		}
	}

	// Parents: dependent families are identified through one, others must not have one.
	for i, it := range pl.items {
		if it.class == nil {
			continue
		}
		f := itemField(i).sub(".parent")
		fam := it.family
		ref := it.raw.Parent
		switch {
		case !fam.Dependent() && ref != "":
			add(f, "%s is not identified through a parent; link it with a relation instead", it.class.Name)
		case fam.Dependent() && ref == "":
			add(f, "required: a %s is identified through its parent (%s)", it.class.Name, strings.Join(fam.Parents, " or "))
		case fam.Dependent():
			p := byRef[ref]
			switch {
			case p == nil:
				add(f, "unknown ref %q", ref)
			case p == it:
				add(f, "an item cannot be its own parent")
			case p.class == nil:
				// the parent's own error says why
			case !m.IsAny(p.class.Name, fam.Parents):
				add(f, "a %s's parent must be %s, got %s", it.class.Name, strings.Join(fam.Parents, " or "), p.class.Name)
			default:
				it.parent = p
				p.children = append(p.children, it)
			}
		}
	}
	for i, it := range pl.items {
		d := 0
		for p := it.parent; p != nil; p = p.parent {
			d++
			if d > len(pl.items) {
				add(fmt.Sprintf("items[%d].parent", i), "cycle in parents")
				it.parent = nil
				d = -1
				break
			}
		}
		it.depth = d
	}

	// Identifiers: an item that offers none could never be found again.
	for i, it := range pl.items {
		if it.class == nil || it.depth < 0 {
			continue
		}
		it.values = e.identifierValues(it)
		if it.native != "" {
			continue
		}
		has := false
		for _, v := range it.values {
			has = has || len(v) > 0
		}
		if !has {
			add(fmt.Sprintf("items[%d].attributes", i), "no identifier: %s", e.needs(it))
		}
	}

	for i, r := range p.Relations {
		f := func(s string) string { return fmt.Sprintf("relations[%d]%s", i, s) }
		rt, ok := m.Relation(r.Type)
		if !ok {
			add(f(".type"), "unknown relation type %q (known: %s)", r.Type, strings.Join(m.RelationTypes(), ", "))
		}
		from, to := byRef[r.From], byRef[r.To]
		end := func(name, verb, ref string, it *item, allowed []string) {
			switch {
			case it == nil:
				add(f("."+name), "unknown ref %q: relations link items of the same payload", ref)
			case it.class == nil:
				add(f("."+name), "item %q has unknown class %q", ref, it.raw.Class)
			case rt != nil && !m.IsAny(it.class.Name, allowed):
				add(f("."+name), "%s cannot %s %s (allowed: %s)", r.Type, verb, it.class.Name, strings.Join(allowed, ", "))
			}
		}
		end("from", "start at", r.From, from, relEnd(rt, true))
		end("to", "end at", r.To, to, relEnd(rt, false))
		if from != nil && to != nil && from == to {
			add(f(""), "an item cannot relate to itself")
		}
		pl.relations = append(pl.relations, relation{typ: r.Type, from: from, to: to})
	}

	if len(errs) > 0 {
		return nil, &ValidationError{Problems: errs}
	}
	maxDepth := 0
	for _, it := range pl.items {
		maxDepth = max(maxDepth, it.depth)
	}
	pl.levels = make([][]*item, maxDepth+1)
	for _, it := range pl.items {
		pl.levels[it.depth] = append(pl.levels[it.depth], it)
	}
	return pl, nil
}

// itemField names fields of items[i] for error messages, built only when one is needed.
type itemField int

func (i itemField) sub(s string) string     { return fmt.Sprintf("items[%d]%s", int(i), s) }
func (i itemField) attr(name string) string { return i.sub(".attributes." + name) }

func relEnd(rt *classes.RelationType, from bool) []string {
	if rt == nil {
		return []string{classes.Root}
	}
	if from {
		return rt.From
	}
	return rt.To
}

// identifierValues returns, per rule of the item's family, the non-junk values it offers.
func (e *Engine) identifierValues(it *item) [][]string {
	out := make([][]string, len(it.family.Rules))
	for i, r := range it.family.Rules {
		if r.Children != nil {
			seen := map[string]bool{}
			for _, c := range it.children {
				if c.family == nil || c.family.Name != r.Children.Family {
					continue
				}
				if v, ok := e.ruleValue(c, r, r.Children.Attribute); ok && !seen[v] {
					seen[v] = true
					out[i] = append(out[i], v)
				}
			}
			sort.Strings(out[i])
			continue
		}
		parts := make([]string, 0, len(r.Attributes))
		for _, a := range r.Attributes {
			v, ok := e.ruleValue(it, r, a)
			if !ok {
				parts = nil
				break
			}
			parts = append(parts, v)
		}
		if parts != nil {
			out[i] = []string{strings.Join(parts, "|")}
		}
	}
	return out
}

func (e *Engine) ruleValue(it *item, r classes.Rule, attr string) (string, bool) {
	if attr == classes.ClassAttribute {
		return it.class.Name, true
	}
	av, ok := it.attrs[attr]
	if !ok {
		return "", false
	}
	v := classes.IdentifierValue(av.canonical)
	if v == "" || (!r.AllowJunk && e.model.IsJunk(v)) {
		return "", false
	}
	return v, true
}

// needs says what an item must carry to be identified.
func (e *Engine) needs(it *item) string {
	rules := make([]string, len(it.family.Rules))
	for i, r := range it.family.Rules {
		rules[i] = r.Describe()
	}
	if it.family.Dependent() {
		return fmt.Sprintf("a %s is identified through its parent by %s (or send a native_key)", it.class.Name, strings.Join(rules, " or "))
	}
	return fmt.Sprintf("a %s needs one of %s that is not a placeholder value (or a native_key)", it.class.Name, strings.Join(rules, ", "))
}
