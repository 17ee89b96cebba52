//go:build windows

package cli

import (
	"io"

	"github.com/outpost-dev/outpost/services/bridge/service"
)

func platformManager(_ string, out io.Writer) manager { return service.Windows{Out: out} }

func openEventLog() (io.Writer, error) { return service.OpenEventLog() }
