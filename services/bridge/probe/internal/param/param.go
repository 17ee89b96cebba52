// Package param holds what every probe kind needs to read its params: errors that name
// the field, durations with limits, lists that accept "a,b" as well as ["a","b"], and
// scrubbing of secrets out of messages that come back from drivers and servers.
package param

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/services/bridge/probe"
)

// Bad is a bad_params error naming the field: `params.ports: "70000" is not a port`.
func Bad(field, format string, args ...any) *probe.Error {
	return probe.Errorf(probe.CodeBadParams, "params.%s: %s", field, fmt.Sprintf(format, args...))
}

// Duration reads a Go duration ("500ms", "2m"); "" gives def. It must be > 0 and ≤ max
// (max 0: no upper bound).
func Duration(field, s string, def, max time.Duration) (time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return def, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d <= 0 {
		return 0, Bad(field, "%q is not a positive duration (want e.g. 500ms, 10s)", s)
	}
	if max > 0 && d > max {
		return 0, Bad(field, "%s is beyond the %s limit", d, max)
	}
	return d, nil
}

// Int checks 0 ≤ v ≤ max (0 means def) and returns the value to use.
func Int(field string, v, def, max int) (int, error) {
	switch {
	case v < 0:
		return 0, Bad(field, "%d is negative", v)
	case v == 0:
		return def, nil
	case max > 0 && v > max:
		return 0, Bad(field, "%d is beyond the limit of %d", v, max)
	}
	return v, nil
}

// Port checks a TCP/UDP port (0 means def).
func Port(field string, v, def int) (int, error) {
	if v == 0 {
		return def, nil
	}
	if v < 1 || v > 65535 {
		return 0, Bad(field, "%d is not a port (1-65535)", v)
	}
	return v, nil
}

// List is a list of strings given either as a JSON list (of strings or numbers) or as a
// single string with comma-separated items.
type List []string

// UnmarshalJSON accepts "a,b", ["a","b"], [22, "80-90"] and 22.
func (l *List) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*l = nil
		return nil
	}
	switch b[0] {
	case '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = splitComma(s)
		return nil
	case '[':
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return err
		}
		out := List{}
		for _, r := range raw {
			var one List
			if err := one.UnmarshalJSON(r); err != nil {
				return err
			}
			out = append(out, one...)
		}
		*l = out
		return nil
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("want a string, a number or a list of them, not %s", b)
		}
		*l = List{n.String()}
		return nil
	}
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Redact replaces every secret in s by "***" (drivers and servers sometimes echo what they
// were given; a secret must never reach a result, an error or a log line).
func Redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= 3 {
			s = strings.ReplaceAll(s, sec, "***")
		}
	}
	return s
}

// Secrets lists every secret of a set of credentials, for Redact.
func Secrets(creds []probe.Credential) []string {
	var out []string
	for _, c := range creds {
		out = append(out, c.Secret)
		for k, v := range c.Fields {
			if isSecretField(k) {
				out = append(out, v)
			}
		}
	}
	return out
}

func isSecretField(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"password", "passphrase", "secret", "key", "token", "community", "bearer"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// Quote shows a user-supplied value in an error, shortened.
func Quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strconv.Quote(s)
}
