package bridge

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-dev/outpost/services/bridge/probe"
)

// KindConfigs returns the config each probe kind runs with: its DefaultConfig, changed by
// the kinds section of the bridge's config file, e.g.
//
//	kinds:
//	  file_read: {allowed_dirs: [/var/log/app]}
//	  tcp_scan: {rate: 500, engine: dial}
//
// Fields are the snake_case yaml names of the kind's Config, durations are written as
// "15s". It reports every problem at once, each naming the kind, the field and the line:
// a kind the bridge does not have, an unknown field, a value of the wrong type, a negative
// number, and whatever the kind's own Config.Validate finds.
func KindConfigs(factories []probe.Factory, section map[string]yaml.Node) (map[string]any, error) {
	out := map[string]any{}
	var names []string
	for _, f := range factories {
		kind := f.Spec().Kind
		names = append(names, kind)
		out[kind] = f.DefaultConfig()
	}
	var errs []error
	for _, kind := range slicesSorted(section) {
		node := section[kind]
		def, ok := out[kind]
		if !ok {
			errs = append(errs, fmt.Errorf("kinds.%s (line %d): this bridge has no such probe kind (it has %s)", kind, node.Line, strings.Join(names, ", ")))
			continue
		}
		cfg, err := decodeKindConfig(kind, &node, def)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[kind] = cfg
	}
	return out, errors.Join(errs...)
}

func decodeKindConfig(kind string, node *yaml.Node, def any) (any, error) {
	at := func(field string, line int) string { return fmt.Sprintf("kinds.%s.%s (line %d)", kind, field, line) }
	t := reflect.TypeOf(def)
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return def, nil // "file_read:" with nothing under it: the defaults
	}
	if node.Kind != yaml.MappingNode || t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("kinds.%s (line %d): want a mapping of the kind's settings", kind, node.Line)
	}
	fields := map[string][]int{} // setting → index of its field
	var known []string
	settings(t, nil, fields, &known)
	var errs []error
	for i := 0; i+1 < len(node.Content); i += 2 {
		k := node.Content[i]
		if _, ok := fields[k.Value]; !ok {
			errs = append(errs, fmt.Errorf("%s: unknown setting (known: %s)", at(k.Value, k.Line), strings.Join(known, ", ")))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	v := reflect.New(t)
	v.Elem().Set(reflect.ValueOf(def))
	if err := node.Decode(v.Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, e := range te.Errors {
				errs = append(errs, fmt.Errorf("kinds.%s: %s", kind, e))
			}
			return nil, errors.Join(errs...)
		}
		return nil, fmt.Errorf("kinds.%s (line %d): %w", kind, node.Line, err)
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k := node.Content[i]
		fv := v.Elem().FieldByIndex(fields[k.Value])
		if negative(fv) {
			errs = append(errs, fmt.Errorf("%s: %s is negative", at(k.Value, k.Line), node.Content[i+1].Value))
		}
	}
	cfg := v.Elem().Interface()
	if val, ok := cfg.(interface{ Validate() error }); ok {
		if err := val.Validate(); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				errs = append(errs, fmt.Errorf("kinds.%s.%s", kind, line))
			}
		}
	}
	return cfg, errors.Join(errs...)
}

// settings lists the yaml names of a Config's fields in order, with the fields of a struct
// embedded `yaml:",inline"` (the limits every exec kind shares) at their place.
func settings(t reflect.Type, at []int, fields map[string][]int, known *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		index := append(slices.Clone(at), i)
		switch {
		case name == "" && slices.Contains(strings.Split(opts, ","), "inline") && f.Type.Kind() == reflect.Struct:
			settings(f.Type, index, fields, known)
		case name != "" && name != "-":
			fields[name] = index
			*known = append(*known, name)
		}
	}
}

func negative(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int() < 0 // durations too
	case reflect.Float32, reflect.Float64:
		return v.Float() < 0
	}
	return false
}

func slicesSorted(m map[string]yaml.Node) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
