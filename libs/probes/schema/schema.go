// Package schema derives a JSON Schema from a Go type and checks JSON against it, so that a
// probe kind's Params struct is the one spec of what a probe may ask: the bridge validates
// with it, the CLI prints it (outpost probe --help-params) and the gateway serves it.
//
// The struct tags a Params field may carry, next to its json tag:
//
//	doc:"what it does"      description
//	default:"22"            the value used when the field is absent (documentation only:
//	                        the runner applies it, with the limits of its bridge config)
//	enum:"a,b,c"            the only values accepted (strings in any case, as the kinds
//	                        read them; "" stands for the default)
//	min:"1" max:"65535"     bounds of a number (or of a list's length, for a list)
//	format:"duration"       a Go duration such as 500ms or 2m (must be > 0)
//	required:"true"         the field must be given
//
// A type with its own JSON form (a list given as "a,b" or [..], a command given as a string
// or an object) describes itself by implementing Describer.
package schema

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Schema is the subset of JSON Schema (2020-12) the probe kinds need.
type Schema struct {
	Type        string             `json:"type,omitempty"` // object | array | string | integer | number | boolean; "" = any
	Description string             `json:"description,omitempty"`
	Properties  map[string]*Schema `json:"properties,omitempty"`
	Required    []string           `json:"required,omitempty"`
	// AdditionalProperties is false for a struct (unknown fields are refused) and the
	// schema of the values for a map.
	AdditionalProperties any       `json:"additionalProperties,omitempty"`
	Items                *Schema   `json:"items,omitempty"`
	AnyOf                []*Schema `json:"anyOf,omitempty"`
	Enum                 []any     `json:"enum,omitempty"`
	Default              any       `json:"default,omitempty"`
	Minimum              *float64  `json:"minimum,omitempty"`
	Maximum              *float64  `json:"maximum,omitempty"`
	MinItems             *int      `json:"minItems,omitempty"`
	MaxItems             *int      `json:"maxItems,omitempty"`
	Format               string    `json:"format,omitempty"`

	// order keeps the fields of a struct in declaration order, for help text.
	order []string
}

// Describer is a type that gives its own schema (its JSON form is not its Go shape).
type Describer interface {
	JSONSchema() *Schema
}

// Order returns the property names in the order the Go struct declares them.
func (s *Schema) Order() []string {
	if len(s.order) == len(s.Properties) {
		return s.order
	}
	names := make([]string, 0, len(s.Properties))
	for n := range s.Properties {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// TypeName is a short type for help text: "integer", "list of string", "string | list".
func (s *Schema) TypeName() string {
	switch {
	case len(s.AnyOf) > 0:
		var parts []string
		for _, o := range s.AnyOf {
			parts = append(parts, o.TypeName())
		}
		return strings.Join(parts, " | ")
	case s.Type == "array" && s.Items != nil:
		return "list of " + s.Items.TypeName()
	case s.Type == "string" && s.Format != "":
		return s.Format
	case s.Type == "":
		return "any"
	}
	return s.Type
}

var cache sync.Map // reflect.Type → *Schema

// For returns the schema of v's type (a struct or a pointer to one). It panics on a type
// it cannot describe: that is a programming error in a contract package, caught by its
// tests.
func For(v any) *Schema {
	t := reflect.TypeOf(v)
	if s, ok := cache.Load(t); ok {
		return s.(*Schema)
	}
	s, err := of(t, map[reflect.Type]bool{})
	if err != nil {
		panic(fmt.Sprintf("schema of %s: %v", t, err))
	}
	cache.Store(t, s)
	return s
}

var describer = reflect.TypeFor[Describer]()

func of(t reflect.Type, seen map[reflect.Type]bool) (*Schema, error) {
	if t.Implements(describer) {
		return reflect.Zero(t).Interface().(Describer).JSONSchema(), nil
	}
	if reflect.PointerTo(t).Implements(describer) {
		return reflect.New(t).Interface().(Describer).JSONSchema(), nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return of(t.Elem(), seen)
	case reflect.String:
		return &Schema{Type: "string"}, nil
	case reflect.Bool:
		return &Schema{Type: "boolean"}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return &Schema{Type: "integer"}, nil
	case reflect.Float32, reflect.Float64:
		return &Schema{Type: "number"}, nil
	case reflect.Interface:
		return &Schema{}, nil
	case reflect.Slice, reflect.Array:
		items, err := of(t.Elem(), seen)
		if err != nil {
			return nil, err
		}
		return &Schema{Type: "array", Items: items}, nil
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil, fmt.Errorf("map key %s: only string keys have a JSON form", t.Key())
		}
		vals, err := of(t.Elem(), seen)
		if err != nil {
			return nil, err
		}
		return &Schema{Type: "object", AdditionalProperties: vals}, nil
	case reflect.Struct:
		if seen[t] {
			return nil, fmt.Errorf("%s refers to itself", t)
		}
		seen[t] = true
		defer delete(seen, t)
		s := &Schema{Type: "object", Properties: map[string]*Schema{}, AdditionalProperties: false}
		if err := fields(s, t, seen); err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("type %s has no JSON schema", t)
}

// fields adds the fields of struct t to s (embedded structs are flattened, as encoding/json
// does).
func fields(s *Schema, t reflect.Type, seen map[reflect.Type]bool) error {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		// an embedded struct's exported fields are promoted even when its type is not
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				if err := fields(s, et, seen); err != nil {
					return err
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		p, err := of(f.Type, seen)
		if err != nil {
			return fmt.Errorf("field %s: %w", f.Name, err)
		}
		// a field's tags refine a copy: the type's own schema may be shared
		cp := *p
		p = &cp
		if err := applyTags(p, f); err != nil {
			return fmt.Errorf("field %s: %w", f.Name, err)
		}
		s.Properties[name] = p
		s.order = append(s.order, name)
		if f.Tag.Get("required") == "true" {
			s.Required = append(s.Required, name)
		}
	}
	return nil
}

func applyTags(p *Schema, f reflect.StructField) error {
	if d := f.Tag.Get("doc"); d != "" {
		p.Description = d
	}
	if fm := f.Tag.Get("format"); fm != "" {
		if fm != "duration" {
			return fmt.Errorf("format %q: only duration is known", fm)
		}
		p.Format = fm
	}
	if e := f.Tag.Get("enum"); e != "" {
		p.Enum = nil
		for _, v := range strings.Split(e, ",") {
			x, err := literal(p, strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("enum: %w", err)
			}
			p.Enum = append(p.Enum, x)
		}
	}
	if d, ok := f.Tag.Lookup("default"); ok {
		x, err := literal(p, d)
		if err != nil {
			return fmt.Errorf("default: %w", err)
		}
		p.Default = x
	}
	for _, b := range []struct {
		tag   string
		num   **float64
		items **int
	}{{tag: "min", num: &p.Minimum, items: &p.MinItems}, {tag: "max", num: &p.Maximum, items: &p.MaxItems}} {
		v, ok := f.Tag.Lookup(b.tag)
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("%s %q: not a number", b.tag, v)
		}
		switch p.Type {
		case "integer", "number":
			*b.num = &n
		case "array":
			i := int(n)
			*b.items = &i
		default:
			return fmt.Errorf("%s on a %s", b.tag, p.TypeName())
		}
	}
	return nil
}

// literal reads a tag value as a value of p's type.
func literal(p *Schema, v string) (any, error) {
	switch p.Type {
	case "integer":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", v)
		}
		return n, nil
	case "number":
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", v)
		}
		return n, nil
	case "boolean":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", v)
		}
		return b, nil
	case "array":
		var out []any
		for _, x := range strings.Split(v, ",") {
			if x = strings.TrimSpace(x); x != "" {
				out = append(out, x)
			}
		}
		return out, nil
	}
	return v, nil
}

// JSON is the schema as indented JSON, with the JSON Schema dialect.
func (s *Schema) JSON() []byte {
	type doc struct {
		Dialect string `json:"$schema"`
		*Schema
	}
	b, err := json.MarshalIndent(doc{"https://json-schema.org/draft/2020-12/schema", s}, "", "  ")
	if err != nil {
		panic(err) // a Schema always marshals
	}
	return b
}
