// Package catalog is the one table of probe kinds: which kinds exist, the capability each
// needs and the credential types each takes. The hub (agents' ad-hoc probes, discovery)
// reads it to route probes and seal credentials; the bridge's registered kinds
// (services/bridge/probe/kinds) must be exactly these, which a bridge test checks.
package catalog

import (
	"slices"

	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/banner"
	"github.com/outpost-dev/outpost/libs/probes/echo"
	"github.com/outpost-dev/outpost/libs/probes/fileread"
	"github.com/outpost-dev/outpost/libs/probes/httpget"
	"github.com/outpost-dev/outpost/libs/probes/httprequest"
	"github.com/outpost-dev/outpost/libs/probes/ldapsearch"
	"github.com/outpost-dev/outpost/libs/probes/snmpget"
	"github.com/outpost-dev/outpost/libs/probes/snmpwalk"
	"github.com/outpost-dev/outpost/libs/probes/sqlquery"
	"github.com/outpost-dev/outpost/libs/probes/sshexec"
	"github.com/outpost-dev/outpost/libs/probes/tcpscan"
	"github.com/outpost-dev/outpost/libs/probes/tlscert"
	"github.com/outpost-dev/outpost/libs/probes/winrmexec"
)

// specs is the table: one line per kind.
var specs = []probes.Spec{
	echo.Spec,
	tcpscan.Spec,
	banner.Spec,
	httpget.Spec,
	tlscert.Spec,
	sshexec.Spec,
	snmpget.Spec,
	snmpwalk.Spec,
	ldapsearch.Spec,
	sqlquery.Spec,
	httprequest.Spec,
	fileread.Spec,
	winrmexec.Spec,
}

// All returns every kind's spec, echo first.
func All() []probes.Spec { return slices.Clone(specs) }

// Lookup returns the spec of kind.
func Lookup(kind string) (probes.Spec, bool) {
	i := slices.IndexFunc(specs, func(s probes.Spec) bool { return s.Kind == kind })
	if i < 0 {
		return probes.Spec{}, false
	}
	return specs[i], true
}

// Capability is the capability kind needs ("" for an unknown kind).
func Capability(kind string) string {
	s, _ := Lookup(kind)
	return s.Capability
}

// CredentialTypes are the credential types kind takes (none for an unknown kind).
func CredentialTypes(kind string) []string {
	s, _ := Lookup(kind)
	return slices.Clone(s.Credentials)
}

// Kinds lists the names of every kind, in the table's order.
func Kinds() []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Kind
	}
	return out
}
