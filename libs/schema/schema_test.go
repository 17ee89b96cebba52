package schema_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/schema"
)

type Inner struct {
	Name string `json:"name"`
}

type Base struct {
	ID      string `json:"id"`
	Shadow  int    `json:"shadow"`
	private int
}

type Tree struct {
	Value    int     `json:"value"`
	Children []*Tree `json:"children,omitempty"`
}

type Sample struct {
	Base
	Shadow   string            `json:"shadow"` // hides Base.Shadow
	Count    int               `json:"count"`
	Ratio    float64           `json:"ratio,omitempty"`
	Big      int64             `json:"big,string"`
	When     time.Time         `json:"when"`
	Later    *time.Time        `json:"later,omitempty"`
	Maybe    *Inner            `json:"maybe"`
	Inners   []Inner           `json:"inners"`
	Tags     []string          `json:"tags,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Raw      json.RawMessage   `json:"raw,omitempty"`
	Blob     []byte            `json:"blob,omitempty"`
	Anything any               `json:"anything"`
	Skipped  string            `json:"-"`
	Untagged bool
	Zero     time.Time `json:"zero,omitzero"`
	Tree     Tree      `json:"tree"`
	Anon     struct {
		X int `json:"x"`
	} `json:"anon"`
}

func TestStructShape(t *testing.T) {
	s := schema.For[Sample]()
	defs := s["$defs"].(map[string]schema.Schema)
	root := defs["schema_test.Sample"]
	if root == nil || s["$ref"] != "#/$defs/schema_test.Sample" {
		t.Fatalf("Sample is not a definition referred to from the root: %v", s)
	}
	props := root["properties"].(schema.Schema)
	var names []string
	for k := range props {
		names = append(names, k)
	}
	slices.Sort(names)
	want := []string{"Untagged", "anon", "anything", "big", "blob", "count", "id", "inners", "labels", "later", "maybe", "ratio", "raw", "shadow", "tags", "tree", "when", "zero"}
	if !slices.Equal(names, want) {
		t.Errorf("properties %v, want %v", names, want)
	}
	req := root["required"].([]string)
	wantReq := []string{"Untagged", "anon", "anything", "big", "count", "id", "inners", "maybe", "shadow", "tree", "when"}
	if !slices.Equal(req, wantReq) {
		t.Errorf("required %v, want %v", req, wantReq)
	}
	for _, c := range []struct {
		prop, want string
	}{
		{"shadow", `{"type":"string"}`},
		{"big", `{"type":"string"}`},
		{"when", `{"format":"date-time","type":"string"}`},
		{"later", `{"format":"date-time","type":"string"}`},
		{"maybe", `{"anyOf":[{"$ref":"#/$defs/schema_test.Inner"},{"type":"null"}]}`},
		{"inners", `{"items":{"$ref":"#/$defs/schema_test.Inner"},"type":["array","null"]}`},
		{"tags", `{"items":{"type":"string"},"type":"array"}`},
		{"labels", `{"additionalProperties":{"type":"string"},"type":"object"}`},
		{"raw", `{}`},
		{"blob", `{"contentEncoding":"base64","type":"string"}`},
		{"anything", `{}`},
		{"anon", `{"properties":{"x":{"type":"integer"}},"required":["x"],"type":"object"}`},
	} {
		got, _ := json.Marshal(props[c.prop])
		if string(got) != c.want {
			t.Errorf("%s: %s, want %s", c.prop, got, c.want)
		}
	}
	// A recursive type refers to itself instead of unfolding forever.
	tree, _ := json.Marshal(defs["schema_test.Tree"])
	if !strings.Contains(string(tree), `{"$ref":"#/$defs/schema_test.Tree"}`) {
		t.Errorf("Tree: %s", tree)
	}
}

// TestEncodedValuesConform encodes values and checks each against its type's schema: what
// the schema documents is what encoding/json produces.
func TestEncodedValuesConform(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		name string
		v    any
		s    schema.Schema
	}{
		{"empty", Sample{}, schema.For[Sample]()},
		{"full", Sample{Base: Base{ID: "x"}, Count: 3, Ratio: 0.5, Big: 1 << 60, When: now, Later: &now, Maybe: &Inner{"a"},
			Inners: []Inner{{"b"}}, Tags: []string{"t"}, Labels: map[string]string{"k": "v"}, Raw: json.RawMessage(`[1,{"a":null}]`),
			Blob: []byte{1, 2}, Anything: map[string]any{"n": 1}, Zero: now, Tree: Tree{Value: 1, Children: []*Tree{{Value: 2}}}}, schema.For[Sample]()},
		{"slice", []Inner{{"a"}}, schema.For[[]Inner]()},
		{"map", map[string][]int{"a": {1}}, schema.For[map[string][]int]()},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := json.Marshal(c.v)
			if err != nil {
				t.Fatal(err)
			}
			var doc any
			_ = json.Unmarshal(b, &doc)
			if err := validate(c.s, c.s, doc, "$"); err != nil {
				t.Errorf("%s does not conform: %v", b, err)
			}
		})
	}
	// And the validator refuses what does not conform, so the test above can fail.
	var bad any
	_ = json.Unmarshal([]byte(`{"id":1}`), &bad)
	if validate(schema.For[Base](), schema.For[Base](), bad, "$") == nil {
		t.Error("a number for a string field passed")
	}
}

func TestUnencodableTypePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a channel got a schema")
		}
	}()
	schema.New("#/$defs/").Schema(reflect.TypeFor[chan int]())
}

// validate checks the subset of JSON Schema the generator writes.
func validate(root, s schema.Schema, v any, at string) error {
	if ref, ok := s["$ref"].(string); ok {
		def := root["$defs"].(map[string]schema.Schema)[strings.TrimPrefix(ref, "#/$defs/")]
		if def == nil {
			return fmt.Errorf("%s: dangling %s", at, ref)
		}
		return validate(root, def, v, at)
	}
	if any, ok := s["anyOf"].([]schema.Schema); ok {
		for _, alt := range any {
			if validate(root, alt, v, at) == nil {
				return nil
			}
		}
		return fmt.Errorf("%s: matches no alternative", at)
	}
	var types []string
	switch ts := s["type"].(type) {
	case string:
		types = []string{ts}
	case []string:
		types = ts
	case nil:
		return nil
	}
	kind := map[bool]string{}
	switch x := v.(type) {
	case nil:
		kind[true] = "null"
	case bool:
		kind[true] = "boolean"
	case float64:
		kind[true] = "number"
		if x == float64(int64(x)) {
			kind[false] = "integer"
		}
	case string:
		kind[true] = "string"
	case []any:
		kind[true] = "array"
	case map[string]any:
		kind[true] = "object"
	}
	if !slices.Contains(types, kind[true]) && !slices.Contains(types, kind[false]) {
		return fmt.Errorf("%s: %T, want %v", at, v, types)
	}
	switch x := v.(type) {
	case []any:
		for i, e := range x {
			if err := validate(root, s["items"].(schema.Schema), e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case map[string]any:
		props, _ := s["properties"].(schema.Schema)
		req, _ := s["required"].([]string)
		for _, r := range req {
			if _, ok := x[r]; !ok {
				return fmt.Errorf("%s: %q missing", at, r)
			}
		}
		for k, e := range x {
			ps, ok := props[k].(schema.Schema)
			if !ok {
				ps, ok = s["additionalProperties"].(schema.Schema)
			}
			if !ok {
				return fmt.Errorf("%s: %q is not in the schema", at, k)
			}
			if err := validate(root, ps, e, at+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}
