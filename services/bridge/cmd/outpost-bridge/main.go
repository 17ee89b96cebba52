// Command outpost-bridge is the site agent: it dials out to the hub and never listens.
package main

import (
	"os"

	"github.com/outpost-dev/outpost/libs/telemetry"
	"github.com/outpost-dev/outpost/services/bridge/cli"
)

func main() {
	stop := telemetry.StartProfile("outpost-bridge")
	code := cli.MainIO(os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
