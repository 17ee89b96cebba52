package console

import (
	"strings"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
)

// The pages read the API's answers as the contract types (libs/api/<service>): the same
// types the services encode them with, so no page keeps its own copy of a shape.

// ciIP is the CI's address attribute, if it has one.
func ciIP(c cmdbapi.CI) string { return value(c.Attributes["ip_address"]) }

// ciSummary is the one attribute line that tells CIs of a list apart: OS, model or version.
func ciSummary(c cmdbapi.CI) string {
	a := func(k string) string { return value(c.Attributes[k]) }
	join := func(parts ...string) string { return strings.TrimSpace(strings.Join(parts, " ")) }
	switch {
	case a("os") != "":
		return join(a("os"), a("os_version"))
	case a("model") != "":
		return join(a("manufacturer"), a("model"))
	case a("version") != "":
		return join(a("vendor"), a("version"))
	case a("mac_address") != "":
		return a("mac_address")
	case a("subject") != "":
		return a("subject")
	}
	return ""
}
