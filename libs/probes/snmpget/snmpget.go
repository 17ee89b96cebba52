// Package snmpget is the contract of the snmp_get probe kind: SNMP GET of OIDs (v1, v2c,
// v3), credentials tried in order.
package snmpget

import (
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/snmp"
)

// Kind and the capability a site grants for it.
const (
	Kind       = "snmp_get"
	Capability = "snmp"
)

// Spec of the snmp_get kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability, Credentials: []string{envelope.CredSNMP, envelope.CredSNMPv3},
	Description: "SNMP GET of OIDs (v1, v2c, v3), credentials tried in order.",
	Params:      Params{}, Result: Result{},
}

// Params of an snmp_get probe.
type Params = snmp.Common

// Result of an snmp_get probe.
type Result struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
	snmp.Attempt
	Values []snmp.Value `json:"values"`
}
