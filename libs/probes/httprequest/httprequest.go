// Package httprequest is the contract of the http_request probe kind: one HTTP request (a
// REST call, a webhook) with status, headers and body up to a cap. It takes only http
// credentials, so that no SSH, SNMP, SQL or LDAP secret is ever sent as an Authorization
// header to a server an operator chose.
package httprequest

import (
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
)

// Kind and the capability a site grants for it.
const (
	Kind       = "http_request"
	Capability = "http"
)

// Spec of the http_request kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability, Credentials: []string{envelope.CredHTTP},
	Description: "One HTTP request (REST call, webhook): status, headers and body up to a cap.",
	Params:      Params{}, Result: Result{},
}

// TLSParams tune TLS of an https request.
type TLSParams struct {
	InsecureSkipVerify bool   `json:"insecure_skip_verify,omitempty" doc:"do not verify the certificate (refused with a credential unless it allows insecure)"`
	ServerName         string `json:"server_name,omitempty" doc:"name to verify (default: the URL's host)"`
	CAPEM              string `json:"ca_pem,omitempty" doc:"CA certificate(s) to verify the server with (default: the system's roots)"`
	MinVersion         string `json:"min_version,omitempty" enum:"1.2,1.3" default:"1.2" doc:"lowest TLS version"`
}

// Params of an http_request probe.
type Params struct {
	Method          string            `json:"method,omitempty" enum:"GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS" default:"GET" doc:"request method"`
	URL             string            `json:"url,omitempty" doc:"absolute http(s) URL; its host must be an allowed address (default: built from target, scheme, port, path)"`
	Scheme          string            `json:"scheme,omitempty" enum:"http,https" doc:"default by port"`
	Port            int               `json:"port,omitempty" min:"0" max:"65535" doc:"TCP port"`
	Path            string            `json:"path,omitempty" default:"/" doc:"path and query"`
	Headers         map[string]string `json:"headers,omitempty" doc:"request headers"`
	Body            string            `json:"body,omitempty" doc:"request body (text)"`
	BodyBase64      string            `json:"body_base64,omitempty" doc:"request body (binary, base64)"`
	Timeout         string            `json:"timeout,omitempty" format:"duration" default:"30s" doc:"whole request, at most 30s"`
	TLS             TLSParams         `json:"tls,omitzero" doc:"TLS of an https request"`
	FollowRedirects int               `json:"follow_redirects,omitempty" min:"0" max:"10" default:"0" doc:"redirects to follow"`
	MaxBody         int               `json:"max_body,omitempty" min:"0" default:"1048576" doc:"response bytes kept"`
}

// Result of an http_request probe.
type Result struct {
	URL               string              `json:"url"`
	Method            string              `json:"method"`
	Status            int                 `json:"status"`
	StatusText        string              `json:"status_text"`
	Proto             string              `json:"proto"`
	Headers           map[string][]string `json:"headers"`
	HeadersTruncated  bool                `json:"headers_truncated,omitempty"`
	ContentType       string              `json:"content_type,omitempty"`
	Body              probes.Blob         `json:"body"`
	TLS               *probes.TLS         `json:"tls,omitempty"`
	Credential        string              `json:"credential,omitempty"`
	FailedCredentials []string            `json:"failed_credentials,omitempty"`
	DurationMS        int64               `json:"duration_ms"`
}
