// Command outpost is the Outpost CLI and the all-in-one hub (`outpost up`).
package main

import (
	"os"

	"github.com/outpost-dev/outpost/libs/telemetry"
	"github.com/outpost-dev/outpost/services/outpost/cli"
)

func main() {
	stop := telemetry.StartProfile("outpost")
	code := cli.Main(os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
