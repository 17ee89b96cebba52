// Package snmp holds what the snmp_get and snmp_walk contracts share: their common params,
// the credential attempt and the decoded varbind. It is not a kind of its own.
package snmp

import "github.com/outpost-dev/outpost/libs/probes"

// Common are the params snmp_get and snmp_walk share.
type Common struct {
	OIDs        probes.List `json:"oids" required:"true" doc:"numeric OIDs (1.3.6.1.2.1.1.1.0)"`
	Version     string      `json:"version,omitempty" doc:"1, 2c or 3; default: each credential's"`
	Port        int         `json:"port,omitempty" min:"0" max:"65535" default:"161" doc:"UDP port"`
	Timeout     string      `json:"timeout,omitempty" format:"duration" default:"2s" doc:"per request try"`
	Retries     *int        `json:"retries,omitempty" min:"0" max:"5" default:"1" doc:"tries after the first"`
	ContextName string      `json:"context_name,omitempty" doc:"SNMPv3 context name"`
}

// Attempt is the outcome of trying credentials: the version spoken, the credential that
// worked and those refused.
type Attempt struct {
	Version           string   `json:"version"`
	Credential        string   `json:"credential"`
	FailedCredentials []string `json:"failed_credentials"`
}

// Value is one varbind, decoded to JSON-friendly types.
type Value struct {
	OID  string `json:"oid"`
	Type string `json:"type"`
	// Value is a string (text, hex, MAC, IP address, OID), a number (integers, counters,
	// gauges, timeticks), or null (null, noSuchObject, noSuchInstance, endOfMibView).
	Value any `json:"value"`
	// Encoding tells how an octet string was rendered: "" (text), "hex" or "mac".
	Encoding string `json:"encoding,omitempty"`
	// Text is a human form where the value is not one: timeticks as "3d 04:05:06.07".
	Text string `json:"text,omitempty"`
}
