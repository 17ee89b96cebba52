package classes

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
)

// Type is the type of an attribute.
type Type string

const (
	String Type = "string"
	Int    Type = "int"
	Float  Type = "float"
	Bool   Type = "bool"
	Time   Type = "time" // RFC 3339 text on the wire
	List   Type = "list" // JSON array
	// MAC is a string holding a MAC address, stored as aa:bb:cc:dd:ee:ff whatever notation
	// the source used, so that values compare, filter and search alike.
	MAC Type = "mac"
)

func typeNames() []string {
	return []string{string(String), string(Int), string(Float), string(Bool), string(Time), string(List), string(MAC)}
}

func (t Type) valid() bool {
	switch t {
	case String, Int, Float, Bool, Time, List, MAC:
		return true
	}
	return false
}

// TypeError says what an attribute value should have been.
type TypeError struct {
	Want Type
	Got  string // JSON kind of the value: string, number, bool, list, object, null
}

func (e *TypeError) Error() string { return fmt.Sprintf("want %s, got %s", e.Want, e.Got) }

// Canonical checks v against the type and returns it in canonical form: string, int64,
// float64, bool, time.Time (UTC) or []any; a MAC is a normalised string. Values decoded from JSON (float64, json.Number,
// []any) and their Go equivalents are accepted; no value is coerced across kinds (the
// string "4" is not an int), so a source that sends the wrong type is told, not guessed at.
func (t Type) Canonical(v any) (any, error) {
	bad := func() (any, error) { return nil, &TypeError{Want: t, Got: KindOf(v)} }
	switch t {
	case String:
		if _, ok := v.(string); ok {
			return v, nil // v as it is: boxing s again would allocate
		}
	case MAC:
		if s, ok := v.(string); ok {
			return NormalizeMAC(s), nil
		}
	case Int:
		switch n := v.(type) {
		case int:
			return int64(n), nil
		case int32:
			return int64(n), nil
		case int64:
			return v, nil
		case uint32:
			return int64(n), nil
		case float64:
			if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
				return int64(n), nil
			}
		case json.Number:
			if i, err := n.Int64(); err == nil {
				return i, nil
			}
		}
	case Float:
		switch n := v.(type) {
		case float64:
			if !math.IsNaN(n) && !math.IsInf(n, 0) {
				return v, nil
			}
		case float32:
			return float64(n), nil
		case int:
			return float64(n), nil
		case int64:
			return float64(n), nil
		case json.Number:
			if f, err := n.Float64(); err == nil {
				return f, nil
			}
		}
	case Bool:
		if _, ok := v.(bool); ok {
			return v, nil
		}
	case Time:
		switch x := v.(type) {
		case time.Time:
			return x.UTC(), nil
		case string:
			tm, err := time.Parse(time.RFC3339Nano, x)
			if err != nil {
				return nil, &TypeError{Want: t, Got: "string not in RFC 3339"}
			}
			return tm.UTC(), nil
		}
	case List:
		switch x := v.(type) {
		case []any:
			return x, nil
		case []string:
			out := make([]any, len(x))
			for i, s := range x {
				out[i] = s
			}
			return out, nil
		}
	}
	return bad()
}

// KindOf names the JSON kind of a value, for error messages.
func KindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "bool"
	case float64, float32, int, int32, int64, uint32, json.Number:
		return "number"
	case []any, []string:
		return "list"
	case map[string]any:
		return "object"
	case time.Time:
		return "time"
	}
	return fmt.Sprintf("%T", v)
}

// Encode returns the stored (JSON) form of a canonical value. Two values are equal for
// reconciliation exactly when their encodings are.
func Encode(canonical any) (string, error) {
	switch v := canonical.(type) {
	case string:
		if plainJSON(v) {
			return `"` + v + `"`, nil // the common case, without the encoder's allocations
		}
	case int64:
		return strconv.FormatInt(v, 10), nil
	case bool:
		return strconv.FormatBool(v), nil
	case time.Time:
		canonical = v.UTC().Format(time.RFC3339Nano)
	}
	b, err := json.Marshal(canonical)
	if err != nil {
		return "", fmt.Errorf("encode attribute: %w", err)
	}
	return string(b), nil
}

// plainJSON reports whether s needs no escaping in JSON (printable ASCII, no quote,
// backslash or the HTML characters encoding/json escapes).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// IdentifierValue returns the normalised text of a canonical value used in an identifier:
// trimmed and lower case, since serials and names are compared case-insensitively.
func IdentifierValue(canonical any) string {
	switch v := canonical.(type) {
	case string:
		return strings.ToLower(strings.TrimSpace(v))
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	}
	s, _ := Encode(canonical)
	return s
}

// NormalizeMAC returns a MAC address as lower-case colon-separated hex, accepting the
// colon, dash, Cisco dotted and bare-hex notations; other text is returned lower-cased.
func NormalizeMAC(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) == 12 {
		if _, err := strconv.ParseUint(s, 16, 64); err == nil {
			var b strings.Builder
			for i := 0; i < 12; i += 2 {
				if i > 0 {
					b.WriteByte(':')
				}
				b.WriteString(s[i : i+2])
			}
			return b.String()
		}
	}
	if hw, err := net.ParseMAC(s); err == nil {
		return hw.String()
	}
	return s
}
