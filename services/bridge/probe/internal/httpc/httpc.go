// Package httpc is what http_get and http_request share: an HTTP client that dials only
// allowed addresses and never keeps connections, response headers within limits, page
// titles, and TLS details.
package httpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// Limits of what a response may put in a result.
const (
	MaxHeaders     = 100
	MaxHeaderValue = 4096
	MaxTitle       = 512
)

// Options of a client.
type Options struct {
	Timeout        time.Duration
	Redirects      int // how many redirects to follow (0: none)
	TLS            *tls.Config
	MaxHeaderBytes int64
	// CheckRedirect, when set, may refuse a redirect (http_request refuses one that would
	// carry a credential to another host or over plaintext).
	CheckRedirect func(req *http.Request) error
}

// Client returns a client whose every connection goes through the site's guarded dialer.
// Redirects to addresses outside the allow-list fail in the dialer.
func Client(set probe.Settings, o Options) *http.Client {
	d := target.Dialer(set)
	tr := &http.Transport{
		DialContext:            d,
		TLSClientConfig:        o.TLS,
		DisableKeepAlives:      true,
		DisableCompression:     false,
		TLSHandshakeTimeout:    o.Timeout,
		ResponseHeaderTimeout:  o.Timeout,
		MaxResponseHeaderBytes: max(o.MaxHeaderBytes, 64<<10),
		ForceAttemptHTTP2:      o.TLS != nil,
		Proxy:                  nil,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   o.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > o.Redirects {
				return http.ErrUseLastResponse
			}
			if o.CheckRedirect != nil {
				return o.CheckRedirect(req)
			}
			return nil
		},
	}
}

// Headers flattens response headers within limits; the second value reports a cut.
func Headers(h http.Header) (map[string][]string, bool) {
	out := map[string][]string{}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	cut := false
	for _, k := range keys {
		if len(out) == MaxHeaders {
			cut = true
			break
		}
		for _, v := range h[k] {
			if len(v) > MaxHeaderValue {
				v = strings.ToValidUTF8(v[:MaxHeaderValue], "") + "…"
				cut = true
			}
			out[k] = append(out[k], strings.ToValidUTF8(v, "\uFFFD"))
		}
	}
	return out, cut
}

// Title extracts the text of the first <title> element of an HTML document: entities
// decoded, whitespace collapsed, at most MaxTitle bytes. "" when there is none.
func Title(body []byte) string {
	s := body
	for {
		i := indexFold(s, "<title")
		if i < 0 {
			return ""
		}
		rest := s[i+len("<title"):]
		if len(rest) == 0 {
			return ""
		}
		// <titlex> is another element
		if c := rest[0]; c != '>' && c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '/' {
			s = rest
			continue
		}
		gt := bytes.IndexByte(rest, '>')
		if gt < 0 {
			return ""
		}
		text := rest[gt+1:]
		if end := indexFold(text, "</title"); end >= 0 {
			text = text[:end]
		} else if len(text) > 4*MaxTitle {
			text = text[:4*MaxTitle]
		}
		return cleanTitle(string(text))
	}
}

func cleanTitle(t string) string {
	t = strings.ToValidUTF8(html.UnescapeString(t), "\uFFFD")
	t = strings.Join(strings.FieldsFunc(t, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\v' || r == 0xa0 || r < 0x20 || r == 0x7f
	}), " ")
	if len(t) > MaxTitle {
		t = t[:MaxTitle]
		for !utf8.ValidString(t) {
			t = t[:len(t)-1]
		}
	}
	return t
}

// indexFold finds an ASCII needle (lower case) in b ignoring case.
func indexFold(b []byte, needle string) int {
	n := len(needle)
	for i := 0; i+n <= len(b); i++ {
		match := true
		for j := 0; j < n; j++ {
			c := b[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != needle[j] {
				match = false
				break
			}
		}
		if match {
			return i
		}
	}
	return -1
}

// URL builds the URL of a probe: an absolute raw URL as given, or scheme://target:port/path.
// The host of an absolute URL must be the probe's target (or an address the site allows,
// checked when dialling).
func URL(raw, scheme, host string, port int, path string) (*url.URL, error) {
	if raw != "" {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%q is not an absolute http(s) URL", raw)
		}
		return u, nil
	}
	if scheme == "" {
		scheme = "http"
		if port == 443 || port == 8443 || port == 9443 || port == 5986 {
			scheme = "https"
		}
	}
	if scheme != "http" && scheme != "https" {
		return nil, fmt.Errorf("scheme %q: want http or https", scheme)
	}
	if port == 0 {
		port = map[string]int{"http": 80, "https": 443}[scheme]
	}
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u, err := url.Parse(scheme + "://" + net.JoinHostPort(host, fmt.Sprint(port)) + path)
	if err != nil {
		return nil, fmt.Errorf("path %q: %v", path, err)
	}
	return u, nil
}

// Error classifies a failed round trip.
func Error(ctx context.Context, u *url.URL, err error) error {
	var pe *probe.Error
	if errors.As(err, &pe) {
		return pe
	}
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return probe.Errorf(probe.CodeTimeout, "%s: no answer in time", redactURL(u))
		}
		return ctx.Err()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	var op *net.OpError
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	var cie x509.CertificateInvalidError
	var rhe tls.RecordHeaderError
	switch {
	case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &hne), errors.As(err, &cie):
		return probe.Errorf(probe.CodeProtocol, "%s: certificate not trusted: %v (set tls.insecure_skip_verify to accept it)", redactURL(u), err)
	case errors.As(err, &rhe):
		return probe.Errorf(probe.CodeProtocol, "%s: the server does not speak TLS: %v", redactURL(u), err)
	case errors.As(err, &op) && op.Op == "dial":
		return target.DialError(ctx, u.Host, err)
	case errors.As(err, &ne) && ne.Timeout():
		return probe.Errorf(probe.CodeTimeout, "%s: no answer in time", redactURL(u))
	}
	return probe.Errorf(probe.CodeProtocol, "%s: %v", redactURL(u), err)
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	return c.String()
}

// Redacted is the URL without user info and query (which may hold secrets).
func Redacted(u *url.URL) string { return redactURL(u) }

// Reason is the reason phrase the server gave ("Not Found"), or the standard one.
func Reason(resp *http.Response) string {
	_, r, _ := strings.Cut(resp.Status, " ")
	if r = strings.ToValidUTF8(strings.TrimSpace(r), "\uFFFD"); r != "" {
		return r
	}
	return http.StatusText(resp.StatusCode)
}
