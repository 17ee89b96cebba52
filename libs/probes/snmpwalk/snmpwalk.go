// Package snmpwalk is the contract of the snmp_walk probe kind: SNMP walk of subtrees
// (GETBULK for v2c/v3), rows streamed in pages.
package snmpwalk

import (
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/snmp"
)

// Kind and the capability a site grants for it.
const (
	Kind       = "snmp_walk"
	Capability = "snmp"
)

// Spec of the snmp_walk kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability, Credentials: []string{envelope.CredSNMP, envelope.CredSNMPv3},
	Description: "SNMP walk of subtrees (GETBULK for v2c/v3), rows streamed in pages.",
	Params:      Params{}, Result: Result{}, Chunk: Page{},
}

// Params of an snmp_walk probe (oids are the roots of the subtrees).
type Params struct {
	snmp.Common
	MaxRepetitions int   `json:"max_repetitions,omitempty" min:"0" max:"100" default:"25" doc:"GETBULK max-repetitions"`
	MaxRows        int   `json:"max_rows,omitempty" min:"0" default:"50000" doc:"stop after this many rows in all (truncated)"`
	PageSize       int   `json:"page_size,omitempty" min:"0" default:"500" doc:"rows per streamed page"`
	Bulk           *bool `json:"bulk,omitempty" default:"true" doc:"use GETBULK where the version has it"`
}

// Page is one streamed page of rows of a subtree.
type Page struct {
	Root   string       `json:"root"`
	Offset int          `json:"offset"`
	Values []snmp.Value `json:"values"`
}

// Root is how many rows one subtree had.
type Root struct {
	OID  string `json:"oid"`
	Rows int    `json:"rows"`
}

// Result of an snmp_walk probe (its final chunk).
type Result struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
	snmp.Attempt
	Roots      []Root `json:"roots"`
	Rows       int    `json:"rows"`
	Truncated  bool   `json:"truncated"`
	Pages      int    `json:"pages"`
	DurationMS int64  `json:"duration_ms"`
	// Values carries the rows when the caller takes no stream.
	Values []snmp.Value `json:"values,omitempty"`
}
