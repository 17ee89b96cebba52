package console

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/url"
	"slices"
	"strings"
	"time"
)

var funcs = template.FuncMap{
	"ago":     ago,
	"when":    when,
	"pill":    pill,
	"bytes":   humanBytes,
	"dur":     duration,
	"value":   value,
	"pct":     pct,
	"join":    strings.Join,
	"ints":    joinInts,
	"short":   short,
	"query":   query,
	"esc":     url.PathEscape,
	"sorted":  sortedKeys,
	"prefix":  func() string { return Prefix },
	"nonzero": func(t time.Time) bool { return !t.IsZero() },
	"ip":      ciIP,
	"summary": ciSummary,
}

// ago says how long ago t was, in the largest unit that is not zero.
func ago(v any) string {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case *time.Time:
		if x == nil {
			return "never"
		}
		t = *x
	}
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	if d < 0 {
		return "in " + duration((-d).Seconds())
	}
	if d < time.Second {
		return "just now"
	}
	return duration(d.Seconds()) + " ago"
}

// when is a timestamp as an operator reads it (UTC, to the second).
func when(v any) string {
	switch x := v.(type) {
	case time.Time:
		if x.IsZero() {
			return ""
		}
		return x.UTC().Format("2006-01-02 15:04:05Z")
	case *time.Time:
		if x == nil || x.IsZero() {
			return ""
		}
		return x.UTC().Format("2006-01-02 15:04:05Z")
	}
	return ""
}

func duration(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours())/24)
}

// pill is the CSS class of a state: good, busy, bad or quiet.
func pill(state string) string {
	switch state {
	case "up", "approved", "completed", "done", "operational", "ok", "open":
		return "pill good"
	case "paused", "draining", "pending", "queued", "scanning", "classifying", "exploring", "classify", "explore", "new", "sent":
		return "pill busy"
	case "down", "revoked", "failed", "stale", "error", "refused", "closed", "timeout":
		return "pill bad"
	}
	return "pill quiet"
}

func humanBytes(v any) string {
	var n float64
	switch x := v.(type) {
	case int:
		n = float64(x)
	case int64:
		n = float64(x)
	case uint64:
		n = float64(x)
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", int64(n))
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}

// value renders an attribute value: lists joined, objects as compact JSON.
func value(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case json.RawMessage: // history values
		var d any
		if len(x) == 0 || json.Unmarshal(x, &d) != nil {
			return string(x)
		}
		return value(d)
	case string:
		return x
	case float64:
		if x == float64(int64(x)) {
			return fmt.Sprintf("%d", int64(x))
		}
		return fmt.Sprintf("%g", x)
	case bool:
		if x {
			return "yes"
		}
		return "no"
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			parts = append(parts, value(e))
		}
		return strings.Join(parts, ", ")
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func pct(a, b int) int {
	if b <= 0 {
		return 0
	}
	p := a * 100 / b
	return min(max(p, 0), 100)
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}

// short cuts s to n runes, marking the cut.
func short(n int, s string) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// query builds "?k=v&…" from pairs, leaving out empty values.
func query(kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			q.Set(kv[i], kv[i+1])
		}
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

func sortedKeys(m any) []string {
	var keys []string
	switch x := m.(type) {
	case map[string]any:
		for k := range x {
			keys = append(keys, k)
		}
	case map[string]int:
		for k := range x {
			keys = append(keys, k)
		}
	case map[string]string:
		for k := range x {
			keys = append(keys, k)
		}
	case map[string][]string:
		for k := range x {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
