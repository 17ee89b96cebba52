package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FieldError is one problem of a document, at a path such as params.commands[0].timeout.
type FieldError struct {
	Path   string
	Reason string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Reason }

// Validate checks the JSON document raw against s; root names it in errors ("params"). It
// reports every problem (errors.Join of *FieldError), unknown fields first by name. Empty
// input and null are an empty object.
func (s *Schema) Validate(root string, raw []byte) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		raw = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return &FieldError{Path: root, Reason: "not valid JSON: " + err.Error()}
	}
	if dec.More() {
		return &FieldError{Path: root, Reason: "more than one JSON value"}
	}
	var errs []error
	s.check(root, v, &errs)
	return errors.Join(errs...)
}

func (s *Schema) check(path string, v any, errs *[]error) {
	bad := func(format string, args ...any) {
		*errs = append(*errs, &FieldError{Path: path, Reason: fmt.Sprintf(format, args...)})
	}
	if len(s.AnyOf) > 0 {
		for _, alt := range s.AnyOf {
			var e []error
			alt.check(path, v, &e)
			if len(e) == 0 {
				return
			}
		}
		bad("want %s, not %s", s.TypeName(), describe(v))
		return
	}
	if v == nil {
		// null stands for "not given" in every kind's params (encoding/json leaves the zero)
		return
	}
	switch s.Type {
	case "":
		return
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("want an object, not %s", describe(v))
			return
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			p, known := s.Properties[k]
			switch {
			case known:
				p.check(path+"."+k, m[k], errs)
			case s.AdditionalProperties == false || s.AdditionalProperties == nil && s.Properties != nil:
				*errs = append(*errs, &FieldError{Path: path + "." + k, Reason: "unknown field (known: " + strings.Join(s.Order(), ", ") + ")"})
			default:
				if vs, ok := s.AdditionalProperties.(*Schema); ok {
					vs.check(path+"."+k, m[k], errs)
				}
			}
		}
		for _, r := range s.Required {
			if x, ok := m[r]; !ok || x == nil {
				*errs = append(*errs, &FieldError{Path: path + "." + r, Reason: "required: " + orDash(s.Properties[r].Description)})
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad("want a list, not %s", describe(v))
			return
		}
		if s.MinItems != nil && len(a) < *s.MinItems {
			bad("%d items, want at least %d", len(a), *s.MinItems)
		}
		if s.MaxItems != nil && len(a) > *s.MaxItems {
			bad("%d items, beyond the limit of %d", len(a), *s.MaxItems)
		}
		if s.Items != nil {
			for i, x := range a {
				s.Items.check(path+"["+strconv.Itoa(i)+"]", x, errs)
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			bad("want a string, not %s", describe(v))
			return
		}
		if s.Format == "duration" && strings.TrimSpace(str) != "" {
			if d, err := time.ParseDuration(strings.TrimSpace(str)); err != nil || d < 0 {
				bad("%s is not a duration (want e.g. 500ms, 10s, 2m)", strconv.Quote(str))
			}
		}
		// as the kinds read them: any case, and "" for the default
		if len(s.Enum) > 0 && str != "" && !slices.ContainsFunc(s.Enum, func(e any) bool { x, ok := e.(string); return ok && strings.EqualFold(x, str) }) {
			bad("%s is not one of %s", strconv.Quote(str), enumText(s.Enum))
		}
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			bad("want %s, not %s", article(s.Type), describe(v))
			return
		}
		f, err := n.Float64()
		if err != nil {
			bad("%s is not a number", n)
			return
		}
		if s.Type == "integer" {
			if _, err := n.Int64(); err != nil {
				bad("%s is not an integer", n)
				return
			}
		}
		if s.Minimum != nil && f < *s.Minimum {
			bad("%s is below the minimum of %s", n, num(*s.Minimum))
		}
		if s.Maximum != nil && f > *s.Maximum {
			bad("%s is beyond the maximum of %s", n, num(*s.Maximum))
		}
		if len(s.Enum) > 0 && !slices.ContainsFunc(s.Enum, func(e any) bool { return fmt.Sprint(e) == n.String() }) {
			bad("%s is not one of %s", n, enumText(s.Enum))
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("want true or false, not %s", describe(v))
		}
	}
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if len(x) > 40 {
			x = x[:40] + "…"
		}
		return "the string " + strconv.Quote(x)
	case json.Number:
		return "the number " + x.String()
	case bool:
		return "the boolean " + strconv.FormatBool(x)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func article(typ string) string {
	if typ == "integer" {
		return "an integer"
	}
	return "a " + typ
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func enumText(e []any) string {
	parts := make([]string, len(e))
	for i, x := range e {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "give it"
	}
	return s
}
