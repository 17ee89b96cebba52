// Package redact turns URLs that may carry secrets (webhook tokens in the path, keys in the
// query, user info) into forms safe for logs, errors, dead-letter reasons and API answers.
package redact

import (
	"errors"
	"net/url"
)

// URL is u with only its scheme and host: a webhook's path often is its secret (Slack,
// Teams, Discord put the token there) and its query a key, so neither is ever printed.
// "…" stands for a dropped path or query, so a reader sees there was one.
func URL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := url.URL{Scheme: u.Scheme, Host: u.Host}
	s := c.String()
	if (u.Path != "" && u.Path != "/") || u.RawPath != "" || u.RawQuery != "" || u.Opaque != "" || u.Fragment != "" {
		s += "/…"
	}
	return s
}

// URLString is URL of a raw URL; one that does not parse is not printed at all.
func URLString(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(unparsable URL, not shown)"
	}
	return URL(u)
}

// HTTPError is err without the request URL net/http puts in it: an *url.Error prints its
// URL whole (secret path and query included), so it is replaced by the error it wraps.
// Wrap the result with URL(u) to say where.
func HTTPError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
