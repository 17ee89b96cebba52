// Package httpget is the contract of the http_get probe kind: GET a web page and report
// status, headers, Server and title, with the certificate and its verification for https.
package httpget

import "github.com/outpost-dev/outpost/libs/probes"

// Kind and the capability a site grants for it.
const (
	Kind       = "http_get"
	Capability = "http"
)

// Spec of the http_get kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability,
	Description: "GET a web page: status, headers, Server, title; certificate and verification for https.",
	Params:      Params{}, Result: Result{},
}

// Params of an http_get probe.
type Params struct {
	Scheme          string `json:"scheme,omitempty" enum:"http,https" doc:"default https on 443, 8443, 9443, 5986, else http"`
	Port            int    `json:"port,omitempty" min:"0" max:"65535" default:"80" doc:"TCP port (or give target host:port)"`
	Path            string `json:"path,omitempty" default:"/" doc:"request path"`
	Host            string `json:"host,omitempty" doc:"Host header and TLS server name"`
	Timeout         string `json:"timeout,omitempty" format:"duration" default:"10s" doc:"whole request"`
	TLSVerify       bool   `json:"tls_verify,omitempty" doc:"fail when the certificate does not verify (it is always reported)"`
	FollowRedirects int    `json:"follow_redirects,omitempty" min:"0" max:"10" default:"0" doc:"redirects to follow"`
	MaxBody         int    `json:"max_body,omitempty" min:"0" default:"65536" doc:"bytes of body read to find the title"`
}

// Result of an http_get probe.
type Result struct {
	URL             string              `json:"url"`
	Status          int                 `json:"status"`
	StatusText      string              `json:"status_text"`
	Proto           string              `json:"proto"`
	Server          string              `json:"server,omitempty"`
	Title           string              `json:"title,omitempty"`
	ContentType     string              `json:"content_type,omitempty"`
	ContentLength   int64               `json:"content_length"`
	Location        string              `json:"location,omitempty"`
	Headers         map[string][]string `json:"headers"`
	HeaderTruncated bool                `json:"headers_truncated,omitempty"`
	// BodyRead is how much of the body was read to find the title; BodyTruncated says the
	// body went on (its size is then ContentLength when the server said it, else unknown).
	BodyRead      int64       `json:"body_read"`
	BodyTruncated bool        `json:"body_truncated"`
	TLS           *probes.TLS `json:"tls,omitempty"`
	DurationMS    int64       `json:"duration_ms"`
}
