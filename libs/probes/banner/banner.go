// Package banner is the contract of the banner probe kind: read what a TCP service says
// first (or answers to `send`) and identify it.
package banner

import "github.com/outpost-dev/outpost/libs/probes"

// Kind and the capability a site grants for it.
const (
	Kind       = "banner"
	Capability = "tcp"
)

// Spec of the banner kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability,
	Description: "Read what a TCP service says first (or answers to `send`) and identify it.",
	Params:      Params{}, Result: Result{},
}

// Params of a banner probe.
type Params struct {
	Port           int    `json:"port,omitempty" min:"0" max:"65535" doc:"TCP port (or give target host:port)"`
	Send           string `json:"send,omitempty" doc:"bytes to send after connecting (e.g. \"HEAD / HTTP/1.0\\r\\n\\r\\n\")"`
	TLS            bool   `json:"tls,omitempty" doc:"speak TLS first (certificate not verified)"`
	ConnectTimeout string `json:"connect_timeout,omitempty" format:"duration" default:"5s" doc:"connect (and TLS handshake) timeout"`
	ReadTimeout    string `json:"read_timeout,omitempty" format:"duration" default:"5s" doc:"how long to wait for the banner"`
	MaxBytes       int    `json:"max_bytes,omitempty" min:"0" default:"4096" doc:"bytes kept (at most 64 KiB)"`
}

// Result of a banner probe.
type Result struct {
	IP     string      `json:"ip"`
	Port   int         `json:"port"`
	TLS    bool        `json:"tls,omitempty"`
	Banner probes.Blob `json:"banner"`
	// Printable is the banner with non-printable bytes escaped (\r \n \xff), for people.
	Printable string `json:"printable"`
	Info
	// Silent: the port accepted but said nothing within read_timeout.
	Silent     bool  `json:"silent"`
	ConnectMS  int64 `json:"connect_ms"`
	DurationMS int64 `json:"duration_ms"`
}

// Info is what a banner tells about the service behind a port.
type Info struct {
	Service string `json:"service,omitempty"` // ssh, smtp, ftp, http, mysql, telnet, rdp, pop3, imap, vnc, jetdirect, ...
	Product string `json:"product,omitempty"` // OpenSSH, Postfix, nginx, MySQL, MariaDB, ...
	Version string `json:"version,omitempty"`
	Extra   string `json:"extra,omitempty"` // the rest of the identification (distribution, comment)
}
