//go:build !windows

package cli

import (
	"errors"
	"io"

	"github.com/outpost-dev/outpost/services/bridge/service"
)

// platformManager is systemd off Windows (the service commands say so where systemctl is
// missing).
func platformManager(root string, out io.Writer) manager {
	return service.Systemd{Root: root, Out: out}
}

func openEventLog() (io.Writer, error) { return nil, errors.New("no Event Log here") }
