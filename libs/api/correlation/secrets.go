package correlation

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Metric and connector definitions are stored in clear and shown to every reader of the
// API: a secret belongs in a stored credential (sealed to the site's bridges per probe), so
// a definition may carry only headers that are never secrets, no user info in its URL and
// no query parameter whose name says it is one.

// AllowedHeaders are the request headers a definition may set.
var AllowedHeaders = []string{"Accept", "Accept-Encoding", "Accept-Language", "Cache-Control", "Content-Type", "User-Agent"}

// secretWords are parts of a query parameter name that say its value is a secret.
var secretWords = []string{"key", "token", "secret", "password", "passwd", "pwd", "pass", "sig", "auth", "session", "credential", "bearer", "jwt", "cookie"}

const useCredential = "definitions are stored and shown in clear: keep the secret in a stored http credential (`outpost credentials add`) and name it in credential"

// secretName: a word of the name (split at - _ . and spaces) starts or ends with a secret
// word, so api_key, apikey, access_token, X-Amz-Signature and sig are caught and "design"
// or "monkeys_seen" are not.
func secretName(name string) bool {
	for _, part := range strings.FieldsFunc(strings.ToLower(name), func(r rune) bool { return strings.ContainsRune("-_. ", r) }) {
		for _, w := range secretWords {
			if strings.HasPrefix(part, w) || strings.HasSuffix(part, w) {
				return true
			}
		}
	}
	return false
}

// checkHeaders refuses every header outside AllowedHeaders.
func checkHeaders(field string, h map[string]string) []error {
	var errs []error
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if !slices.Contains(AllowedHeaders, http.CanonicalHeaderKey(k)) {
			errs = append(errs, fmt.Errorf("%s.%s: not allowed (allowed: %s); %s", field, k, strings.Join(AllowedHeaders, ", "), useCredential))
		}
	}
	return errs
}

// checkURL refuses user info and secret-looking query parameters in a URL (or a path with
// a query).
func checkURL(field, raw string) []error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil // its own check says it is not a URL; nothing is echoed here
	}
	var errs []error
	if u.User != nil {
		errs = append(errs, fmt.Errorf("%s: user info (user:password@) is not allowed; %s", field, useCredential))
	}
	names := []string{}
	for k := range u.Query() {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if secretName(k) {
			errs = append(errs, fmt.Errorf("%s: query parameter %q looks like a secret; %s", field, k, useCredential))
		}
	}
	return errs
}

// checkHTTPParams checks the params of an http_request metric (libs/probes/httprequest).
func checkHTTPParams(raw json.RawMessage) []error {
	if len(raw) == 0 {
		return nil
	}
	var p struct {
		URL     string            `json:"url"`
		Path    string            `json:"path"`
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil // "params: not JSON" says so
	}
	errs := checkHeaders("params.headers", p.Headers)
	errs = append(errs, checkURL("params.url", p.URL)...)
	return append(errs, checkURL("params.path", p.Path)...)
}
