//go:build windows

package upgrade

import "errors"

const exeSuffix = ".exe"

// Exec is not available on Windows: a service cannot replace its own image; the upgrade
// there is left to the service wrapper (not built yet), so Supported is false and the
// bridge reports an upgrade as failed with this reason.
func Exec(Decision) error {
	return errors.New("self-upgrade is not supported on Windows yet: install the new zip")
}

// Supported reports whether this platform can re-execute into a new build.
const Supported = false
