package transform

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// RowRef is the payload ref of a row's own CI; related CIs are rel<i>.
const RowRef = "row"

// Result is what a map makes of a row: a payload for the CMDB (Outcome empty), or an
// outcome decided here (ignored, skipped, error) with its reason.
type Result struct {
	Outcome string
	Reason  string
	Payload *envelope.CIPayload
	// Columns are the row columns the failing expression reads (an error's cells).
	Columns []string
}

// Apply transforms one row. nativeKey identifies the row within its source: it is the CI's
// native key when the map coalesces on nothing (every row its own CI). observed is the
// payload's observation time (the run's, so a payload sent again is the same payload).
func (m *Map) Apply(row map[string]any, nativeKey string, observed time.Time) Result {
	env := exprEnv(row)
	if m.SkipIf != nil {
		v, err := expr.Run(m.SkipIf.prog, env)
		if err != nil {
			return Result{Outcome: api.OutcomeError, Reason: fmt.Sprintf("skip_if (map line %d): %s", m.SkipIf.Line, oneLine(err.Error())),
				Columns: m.SkipIf.Columns}
		}
		if b, _ := v.(bool); b {
			return Result{Outcome: api.OutcomeIgnored, Reason: "skip_if: " + m.SkipIf.Src}
		}
	}
	attrs, err := evalFields(m.Fields, env, "fields.")
	if err != nil {
		return fieldError(err)
	}
	for _, c := range m.Coalesce {
		// The CMDB ignores placeholder identifiers ("N/A", "0000"): such a row could only
		// ever be inserted again, so it is skipped like a missing value.
		v := attrs[c]
		if v == nil || bus.IsJunkIdentifier(strings.ToLower(strings.TrimSpace(fmt.Sprint(v)))) {
			return Result{Outcome: api.OutcomeSkipped, Reason: fmt.Sprintf("no value for coalesce attribute %s (got %s)", c, show(attrs[c]))}
		}
	}
	item := envelope.CIItem{Ref: RowRef, Class: m.Class, Attributes: attrs}
	if len(m.Coalesce) == 0 {
		item.NativeKey = nativeKey
	}
	p := &envelope.CIPayload{Source: m.Source, Observed: observed, Items: []envelope.CIItem{item}}
	for i, r := range m.Related {
		ra, err := evalFields(r.Fields, env, fmt.Sprintf("relations[%d].to.fields.", i))
		if err != nil {
			return fieldError(err)
		}
		if len(ra) == 0 {
			continue // the row has nothing to relate (an empty software column)
		}
		ref := fmt.Sprintf("rel%d", i)
		it := envelope.CIItem{Ref: ref, Class: r.Class, Attributes: ra}
		if r.Child {
			it.Parent = RowRef
		} else {
			p.Relations = append(p.Relations, envelope.CIRelation{Type: r.Type, From: RowRef, To: ref})
		}
		p.Items = append(p.Items, it)
	}
	return Result{Payload: p}
}

// fieldErr is a field that failed, with the columns its expression reads.
type fieldErr struct {
	msg     string
	columns []string
}

func (e *fieldErr) Error() string { return e.msg }

func fieldError(err error) Result {
	r := Result{Outcome: api.OutcomeError, Reason: err.Error()}
	if fe, ok := err.(*fieldErr); ok {
		r.Columns = fe.columns
	}
	return r
}

// evalFields runs each field's expression and converts the value to the attribute's type.
// A nil value (a missing column) leaves the attribute out.
func evalFields(fields []Field, env map[string]any, prefix string) (map[string]any, error) {
	attrs := make(map[string]any, len(fields))
	for _, f := range fields {
		v, err := expr.Run(f.Expr.prog, env)
		if err != nil {
			return nil, &fieldErr{fmt.Sprintf("%s%s (map line %d): %s%s", prefix, f.Attr, f.Expr.Line, oneLine(err.Error()), missing(f.Expr, env)), f.Expr.Columns}
		}
		if v == nil {
			continue
		}
		cv, err := convert(v, f.Type)
		if err != nil {
			return nil, &fieldErr{fmt.Sprintf("%s%s (map line %d): %v", prefix, f.Attr, f.Expr.Line, err), f.Expr.Columns}
		}
		if cv != nil {
			attrs[f.Attr] = cv
		}
	}
	return attrs, nil
}

// missing explains a failed expression by the columns it reads that the row lacks: the
// expression engine's own message for a missing value ("call of reflect.Value.Type on zero
// Value") does not say which.
func missing(e *Expr, env map[string]any) string {
	row, _ := env["row"].(map[string]any)
	var gone []string
	for _, c := range e.Columns {
		if v, ok := row[c]; !ok || v == nil {
			gone = append(gone, c)
		}
	}
	if len(gone) == 0 {
		return ""
	}
	return fmt.Sprintf(" (the row has no value for %s: guard with `row.%s != nil ? … : nil`)", strings.Join(gone, ", "), gone[0])
}

// convert checks a value against a CMDB attribute type. Text that reads cleanly as the type
// is accepted (CSV and XML give text); anything else is a wrong type.
func convert(v any, typ string) (any, error) {
	wrong := func() error { return fmt.Errorf("want %s, got %s", typ, show(v)) }
	switch typ {
	case "", "string", "mac":
		switch t := v.(type) {
		case string:
			if t == "" {
				return nil, nil
			}
			return t, nil
		case int, int64, int32, float64, float32, bool, uint64:
			return fmt.Sprint(t), nil
		}
		return nil, wrong()
	case "int":
		switch t := v.(type) {
		case int:
			return int64(t), nil
		case int64:
			return t, nil
		case int32:
			return int64(t), nil
		case float64:
			if t == math.Trunc(t) && math.Abs(t) < 1<<53 {
				return int64(t), nil
			}
		case string:
			s := strings.TrimSpace(t)
			if s == "" {
				return nil, nil
			}
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return n, nil
			}
		}
		return nil, wrong()
	case "float":
		switch t := v.(type) {
		case int:
			return float64(t), nil
		case int64:
			return float64(t), nil
		case float64:
			return t, nil
		case string:
			s := strings.TrimSpace(t)
			if s == "" {
				return nil, nil
			}
			if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
				return f, nil
			}
		}
		return nil, wrong()
	case "bool":
		switch t := v.(type) {
		case bool:
			return t, nil
		case string:
			switch strings.ToLower(strings.TrimSpace(t)) {
			case "":
				return nil, nil
			case "true", "yes", "y", "1":
				return true, nil
			case "false", "no", "n", "0":
				return false, nil
			}
		case int64:
			if t == 0 || t == 1 {
				return t == 1, nil
			}
		}
		return nil, wrong()
	case "time":
		switch t := v.(type) {
		case time.Time:
			return t.UTC().Format(time.RFC3339Nano), nil
		case string:
			s := strings.TrimSpace(t)
			if s == "" {
				return nil, nil
			}
			for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
				if tm, err := time.Parse(layout, s); err == nil {
					return tm.UTC().Format(time.RFC3339Nano), nil
				}
			}
		}
		return nil, wrong()
	case "list":
		switch t := v.(type) {
		case []any:
			return t, nil
		case []string:
			out := make([]any, len(t))
			for i, s := range t {
				out[i] = s
			}
			return out, nil
		}
		return nil, wrong()
	}
	return v, nil
}

// show describes a value for a reason: its type and (short) text.
func show(v any) string {
	switch t := v.(type) {
	case nil:
		return "nothing"
	case string:
		if len(t) > 40 {
			t = t[:40] + "…"
		}
		return fmt.Sprintf("string %q", t)
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("%T %v", v, v)
}
