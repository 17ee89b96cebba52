package schema_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/probes/schema"
)

type item struct {
	Name    string `json:"name" required:"true" doc:"item name"`
	Timeout string `json:"timeout,omitempty" format:"duration"`
}

type inner struct {
	Level int `json:"level,omitempty" min:"1" max:"3"`
}

type params struct {
	inner
	Port    int               `json:"port,omitempty" min:"0" max:"65535" default:"22" doc:"TCP port"`
	Mode    string            `json:"mode,omitempty" enum:"fast,slow" doc:"how"`
	Rate    *float64          `json:"rate,omitempty" min:"0"`
	On      bool              `json:"on,omitempty"`
	Items   []item            `json:"items,omitempty" max:"2"`
	Headers map[string]string `json:"headers,omitempty"`
	Any     []any             `json:"any,omitempty"`
	Skip    string            `json:"-"`
}

func TestGenerate(t *testing.T) {
	s := schema.For(params{})
	if got, want := strings.Join(s.Order(), ","), "level,port,mode,rate,on,items,headers,any"; got != want {
		t.Errorf("order %s, want %s (embedded fields flattened, declaration order, json:\"-\" left out)", got, want)
	}
	p := s.Properties["port"]
	if p.Type != "integer" || p.Default != int64(22) || *p.Minimum != 0 || *p.Maximum != 65535 || p.Description != "TCP port" {
		t.Errorf("port: %+v", p)
	}
	if m := s.Properties["mode"]; len(m.Enum) != 2 || m.Enum[1] != "slow" {
		t.Errorf("mode enum %v", m.Enum)
	}
	if it := s.Properties["items"]; it.Type != "array" || *it.MaxItems != 2 || it.Items.Required[0] != "name" || it.Items.Properties["timeout"].Format != "duration" {
		t.Errorf("items: %+v", it)
	}
	if h, ok := s.Properties["headers"].AdditionalProperties.(*schema.Schema); !ok || h.Type != "string" {
		t.Errorf("headers: a map of strings, got %+v", s.Properties["headers"])
	}
	var doc map[string]any
	if err := json.Unmarshal(s.JSON(), &doc); err != nil || doc["$schema"] == nil || doc["additionalProperties"] != false {
		t.Errorf("JSON document: %v %v", err, doc)
	}
}

func TestValidate(t *testing.T) {
	s := schema.For(&params{})
	cases := []struct {
		name, in string
		want     []string // each must appear; none: valid
	}{
		{"empty", ``, nil},
		{"null", `null`, nil},
		{"every field", `{"level":2,"port":22,"mode":"FAST","rate":1.5,"on":true,"items":[{"name":"a","timeout":"1s"}],"headers":{"a":"b"},"any":[1,"x",null]}`, nil},
		{"empty enum is the default", `{"mode":""}`, nil},
		{"null field is absent", `{"port":null}`, nil},
		{"unknown field named with the known ones", `{"prot":22}`, []string{"params.prot: unknown field (known: level, port, mode"}},
		{"unknown nested field", `{"items":[{"name":"a","x":1}]}`, []string{"params.items[0].x: unknown field"}},
		{"wrong type", `{"port":"22"}`, []string{`params.port: want an integer, not the string "22"`}},
		{"not an integer", `{"port":2.5}`, []string{"params.port: 2.5 is not an integer"}},
		{"beyond max", `{"port":70000}`, []string{"params.port: 70000 is beyond the maximum of 65535"}},
		{"below min, embedded", `{"level":0}`, []string{"params.level: 0 is below the minimum of 1"}},
		{"enum", `{"mode":"medium"}`, []string{`params.mode: "medium" is not one of fast, slow`}},
		{"duration", `{"items":[{"name":"a","timeout":"soon"}]}`, []string{`params.items[0].timeout: "soon" is not a duration`}},
		{"required", `{"items":[{}]}`, []string{"params.items[0].name: required: item name"}},
		{"too many items", `{"items":[{"name":"a"},{"name":"b"},{"name":"c"}]}`, []string{"params.items: 3 items, beyond the limit of 2"}},
		{"map values", `{"headers":{"a":1}}`, []string{"params.headers.a: want a string"}},
		{"not an object", `[1]`, []string{"params: want an object, not a list"}},
		{"not JSON", `{"port":`, []string{"params: not valid JSON"}},
		{"every problem at once", `{"port":-1,"mode":"x","zz":1}`, []string{"params.port", "params.mode", "params.zz"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Validate("params", []byte(tc.in))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

type badTag struct {
	N int `json:"n" min:"x"`
}

func TestBadTagsPanic(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a min tag that is not a number was accepted")
		}
	}()
	schema.For(badTag{})
}
