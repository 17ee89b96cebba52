// Package kinds is the one list of the probe kinds the bridge binary carries. Adding a
// kind means adding its factory here (and passing the conformance suite in probetest).
package kinds

import (
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/banner"
	"github.com/outpost-dev/outpost/services/bridge/probe/echo"
	"github.com/outpost-dev/outpost/services/bridge/probe/fileread"
	"github.com/outpost-dev/outpost/services/bridge/probe/httpget"
	"github.com/outpost-dev/outpost/services/bridge/probe/httprequest"
	"github.com/outpost-dev/outpost/services/bridge/probe/ldapsearch"
	"github.com/outpost-dev/outpost/services/bridge/probe/snmpget"
	"github.com/outpost-dev/outpost/services/bridge/probe/snmpwalk"
	"github.com/outpost-dev/outpost/services/bridge/probe/sqlquery"
	"github.com/outpost-dev/outpost/services/bridge/probe/sshexec"
	"github.com/outpost-dev/outpost/services/bridge/probe/tcpscan"
	"github.com/outpost-dev/outpost/services/bridge/probe/tlscert"
	"github.com/outpost-dev/outpost/services/bridge/probe/winrmexec"
)

// All returns a factory of every kind, echo first.
func All() []probe.Factory {
	return []probe.Factory{
		echo.NewFactory(),
		tcpscan.NewFactory(),
		banner.NewFactory(),
		httpget.NewFactory(),
		tlscert.NewFactory(),
		sshexec.NewFactory(),
		snmpget.NewFactory(),
		snmpwalk.NewFactory(),
		ldapsearch.NewFactory(),
		sqlquery.NewFactory(),
		httprequest.NewFactory(),
		fileread.NewFactory(),
		winrmexec.NewFactory(),
	}
}
