// Package kinds is the bridge binary's one registration list of probe kinds.
package kinds

import (
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/echo"
)

// All returns every probe kind this bridge binary offers.
func All() []probe.Factory {
	return []probe.Factory{
		echo.NewFactory(),
	}
}
