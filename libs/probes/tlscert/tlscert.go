// Package tlscert is the contract of the tls_cert probe kind: a TLS handshake (directly or
// after LDAP or SMTP StartTLS) and a summary of the certificate chain the target presents.
package tlscert

import "github.com/outpost-dev/outpost/libs/probes"

// Kind and the capability a site grants for it.
const (
	Kind       = "tls_cert"
	Capability = "tls"
)

// Spec of the tls_cert kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability,
	Description: "TLS handshake and certificate chain: subject, SANs, issuer, validity, days left, SHA-256 fingerprint, verification.",
	Params:      Params{}, Result: Result{},
}

// Params of a tls_cert probe.
type Params struct {
	Port       int    `json:"port,omitempty" min:"0" max:"65535" default:"443" doc:"TCP port (or give target host:port)"`
	ServerName string `json:"server_name,omitempty" doc:"SNI and name to verify; default: the target when it is a name"`
	StartTLS   string `json:"starttls,omitempty" enum:"ldap,smtp" doc:"upgrade a plaintext protocol first"`
	Timeout    string `json:"timeout,omitempty" format:"duration" default:"10s" doc:"connect and handshake timeout"`
}

// Result of a tls_cert probe.
type Result struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
	probes.TLS
	DurationMS int64 `json:"duration_ms"`
}
