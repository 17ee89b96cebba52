// Package schema generates JSON Schemas (2020-12, as OpenAPI 3.1 uses them) from Go types by
// reflection, so the documented shape of a request or an answer is the type that encodes it
// and cannot drift from it. It follows encoding/json: json tags and their names, "-",
// omitempty and omitzero (not required), ",string", embedded structs (flattened), pointers
// (null unless omitted), slices (null when nil unless omitted), maps, time.Time,
// json.RawMessage and []byte. Named struct types become definitions referred to by $ref, so a
// type used by many operations is written once and recursive types terminate.
package schema

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Schema is one JSON Schema object.
type Schema = map[string]any

// Generator turns types into schemas, collecting the definitions they refer to.
type Generator struct {
	prefix string
	defs   map[string]Schema
	names  map[reflect.Type]string
	owners map[string]reflect.Type
}

// New returns a generator whose references start with refPrefix: "#/$defs/" for a
// standalone document, "#/components/schemas/" for OpenAPI.
func New(refPrefix string) *Generator {
	return &Generator{prefix: refPrefix, defs: map[string]Schema{}, names: map[reflect.Type]string{}, owners: map[string]reflect.Type{}}
}

// Defs returns the definitions collected so far, by name.
func (g *Generator) Defs() map[string]Schema { return g.defs }

// For returns a standalone schema of T with its definitions under $defs.
func For[T any]() Schema {
	g := New("#/$defs/")
	s := g.Schema(reflect.TypeFor[T]())
	if len(g.defs) > 0 {
		out := Schema{"$defs": g.defs}
		for k, v := range s {
			out[k] = v
		}
		s = out
	}
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	return s
}

var (
	timeType      = reflect.TypeFor[time.Time]()
	durationType  = reflect.TypeFor[time.Duration]()
	rawType       = reflect.TypeFor[json.RawMessage]()
	numberType    = reflect.TypeFor[json.Number]()
	marshalerType = reflect.TypeFor[json.Marshaler]()
	textType      = reflect.TypeFor[encoding.TextMarshaler]()
)

// Schema returns the schema of t: a $ref for a named struct type (its definition is added
// to Defs), the schema itself otherwise.
func (g *Generator) Schema(t reflect.Type) Schema {
	switch t {
	case timeType:
		return Schema{"type": "string", "format": "date-time"}
	case rawType:
		return Schema{} // any JSON value
	case numberType:
		return Schema{"type": "number"}
	case durationType:
		return Schema{"type": "integer", "description": "nanoseconds"}
	}
	if t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface {
		// A type that encodes itself says nothing about its shape to reflection.
		if t.Implements(marshalerType) || reflect.PointerTo(t).Implements(marshalerType) {
			return Schema{}
		}
		if t.Kind() != reflect.String && (t.Implements(textType) || reflect.PointerTo(t).Implements(textType)) {
			return Schema{"type": "string"}
		}
	}
	switch t.Kind() {
	case reflect.Bool:
		return Schema{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		s := Schema{"type": "integer"}
		if t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uintptr {
			s["minimum"] = 0
		}
		return s
	case reflect.Float32, reflect.Float64:
		return Schema{"type": "number"}
	case reflect.String:
		return Schema{"type": "string"}
	case reflect.Interface:
		return Schema{}
	case reflect.Pointer:
		return nullable(g.Schema(t.Elem()))
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return Schema{"type": []string{"string", "null"}, "contentEncoding": "base64"}
		}
		return Schema{"type": []string{"array", "null"}, "items": g.Schema(t.Elem())}
	case reflect.Array:
		return Schema{"type": "array", "items": g.Schema(t.Elem()), "minItems": t.Len(), "maxItems": t.Len()}
	case reflect.Map:
		return Schema{"type": []string{"object", "null"}, "additionalProperties": g.Schema(t.Elem())}
	case reflect.Struct:
		if t.Name() == "" {
			return g.object(t)
		}
		name := g.name(t)
		if _, done := g.defs[name]; !done {
			g.defs[name] = Schema{} // placeholder: a recursive reference ends here
			g.defs[name] = g.object(t)
		}
		return Schema{"$ref": g.prefix + name}
	}
	panic(fmt.Sprintf("schema: %s (%s) cannot be encoded as JSON", t, t.Kind()))
}

// name is a definition's name: package and type ("agents.Site"), unique per type.
func (g *Generator) name(t reflect.Type) string {
	if n, ok := g.names[t]; ok {
		return n
	}
	pkg := t.PkgPath()
	pkg = pkg[strings.LastIndex(pkg, "/")+1:]
	base := pkg + "." + t.Name()
	base = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, base)
	n := base
	for i := 2; g.owners[n] != nil; i++ {
		n = fmt.Sprintf("%s_%d", base, i)
	}
	g.names[t], g.owners[n] = n, t
	return n
}

// nullable lets a schema be null too.
func nullable(s Schema) Schema {
	if len(s) == 0 {
		return s
	}
	if typ, ok := s["type"].(string); ok {
		out := Schema{}
		for k, v := range s {
			out[k] = v
		}
		out["type"] = []string{typ, "null"}
		return out
	}
	if _, ok := s["type"].([]string); ok {
		return s
	}
	return Schema{"anyOf": []Schema{s, {"type": "null"}}}
}

// field is one encoded field of a struct.
type field struct {
	name     string
	schema   Schema
	required bool
}

// object is the schema of a struct's fields.
func (g *Generator) object(t reflect.Type) Schema {
	props := Schema{}
	var required []string
	for _, f := range g.fields(t, map[reflect.Type]bool{}) {
		props[f.name] = f.schema
		if f.required {
			required = append(required, f.name)
		}
	}
	s := Schema{"type": "object", "properties": props}
	if len(required) > 0 {
		slices.Sort(required)
		s["required"] = required
	}
	return s
}

// fields lists the encoded fields of t as encoding/json sees them: embedded structs without
// a name are flattened, and a shallower field hides a deeper one of the same name.
func (g *Generator) fields(t reflect.Type, seen map[reflect.Type]bool) []field {
	if seen[t] {
		return nil
	}
	seen[t] = true
	var own, promoted []field
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		ft := sf.Type
		if sf.Anonymous && name == "" {
			et := ft
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				promoted = append(promoted, g.fields(et, seen)...)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		omit := hasOpt(opts, "omitempty") || hasOpt(opts, "omitzero")
		var s Schema
		switch {
		case hasOpt(opts, "string") && isScalar(ft):
			s = Schema{"type": "string"}
		case omit && ft.Kind() == reflect.Pointer:
			s = g.Schema(ft.Elem()) // omitted when nil, so never null
		case omit && (ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map):
			s = notNull(g.Schema(ft))
		default:
			s = g.Schema(ft)
		}
		own = append(own, field{name: name, schema: s, required: !omit})
	}
	out := own
	for _, p := range promoted {
		if !slices.ContainsFunc(out, func(f field) bool { return f.name == p.name }) {
			out = append(out, p)
		}
	}
	return out
}

func hasOpt(opts, want string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

func isScalar(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64, reflect.String:
		return true
	}
	return false
}

// notNull drops "null" from a schema's types: an omitted empty slice or map is absent, not null.
func notNull(s Schema) Schema {
	ts, ok := s["type"].([]string)
	if !ok {
		return s
	}
	out := Schema{}
	for k, v := range s {
		out[k] = v
	}
	keep := slices.DeleteFunc(slices.Clone(ts), func(x string) bool { return x == "null" })
	if len(keep) == 1 {
		out["type"] = keep[0]
	} else {
		out["type"] = keep
	}
	return out
}
