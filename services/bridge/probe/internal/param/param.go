// Package param holds what every probe kind needs to read its params: errors that name
// the field, durations with limits, lists that accept "a,b" as well as ["a","b"], and
// scrubbing of secrets out of messages that come back from drivers and servers.
package param

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/probes"
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

// List is a list of strings given as a JSON list or as "a,b" (the contract's type).
type List = probes.List

// Redact replaces every secret in s by "***" (drivers and servers sometimes echo what they
// were given; a secret must never reach a result, an error or a log line). Give it the
// list Secrets builds, which holds the encoded forms too.
func Redact(s string, secrets ...string) string {
	// longest first: an encoded form may contain a shorter secret
	secrets = slices.Clone(secrets)
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, sec := range secrets {
		if len(sec) >= 3 {
			s = strings.ReplaceAll(s, sec, "***")
		}
	}
	return s
}

// Secrets lists every secret of a set of credentials, for Redact, with the forms a server
// may echo them in: an echo service returns the Authorization header (base64 of
// user:password), a JSON API quotes what it got, a web server logs it URL-encoded.
func Secrets(creds []probe.Credential) []string {
	var out []string
	for _, c := range creds {
		out = append(out, Encodings(c.Secret)...)
		if c.Username != "" && c.Secret != "" {
			for _, enc := range b64s {
				out = append(out, enc.EncodeToString([]byte(c.Username+":"+c.Secret)))
			}
		}
		for k, v := range c.Fields {
			if isSecretField(k) {
				out = append(out, Encodings(v)...)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

var b64s = []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding}

// minEncoded is the shortest encoded fragment worth redacting: shorter ones would match
// ordinary text by chance and only blank it out.
const minEncoded = 6

// Encodings returns secret and its encoded forms: base64 (standard and URL alphabets, with
// and without padding), URL query and path escaping, JSON string escaping, and — because
// base64 of a longer text that contains the secret ("user:secret", a JSON body) encodes
// it differently depending on where it starts — the part of its base64 that does not
// depend on what comes before or after it, for each of the three alignments.
func Encodings(secret string) []string {
	if len(secret) < 3 {
		return nil
	}
	out := []string{secret, url.QueryEscape(secret), url.PathEscape(secret)}
	var js bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(secret)
	out = append(out, strings.TrimSuffix(strings.TrimSpace(js.String()), `"`)[1:])
	if b, err := json.Marshal(secret); err == nil { // with <, > and & escaped too
		out = append(out, string(b[1:len(b)-1]))
	}
	for _, e := range b64s {
		out = append(out, e.EncodeToString([]byte(secret)))
	}
	for k := 1; k <= 2; k++ {
		shifted := append(make([]byte, k), secret...)
		for _, e := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			s := e.EncodeToString(shifted)
			// characters 6i..6i+5 bits: skip those holding bits of the k prefix bytes,
			// keep those made only of the secret's bits
			from, to := (8*k+5)/6, 8*(k+len(secret))/6
			if to-from >= minEncoded {
				out = append(out, s[from:to])
			}
		}
	}
	// the unshifted form, cut before the last character (which holds bits of what follows)
	for _, e := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		s := e.EncodeToString([]byte(secret))
		if to := 8 * len(secret) / 6; to >= minEncoded {
			out = append(out, s[:to])
		}
	}
	var kept []string
	for _, s := range out {
		if len(s) >= 3 {
			kept = append(kept, s)
		}
	}
	slices.Sort(kept)
	return slices.Compact(kept)
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

// RedactBlob is Redact on captured output shown as text (base64 output is binary and
// left as it is).
func RedactBlob(b probes.Blob, secrets []string) probes.Blob {
	b.Text = Redact(b.Text, secrets...)
	return b
}

// RedactError is Redact on a probe error's message, keeping its code; other errors
// (context errors, which quote nothing) pass as they are.
func RedactError(err error, secrets []string) error {
	var pe *probe.Error
	if errors.As(err, &pe) {
		return &probe.Error{Code: pe.Code, Message: Redact(pe.Message, secrets...)}
	}
	return err
}
