// Command outpost-bridge is the site agent: it dials out to the hub and never listens.
package main

import (
	"os"

	"github.com/outpost-dev/outpost/services/bridge/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stderr)) }
