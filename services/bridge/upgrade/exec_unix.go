//go:build !windows

package upgrade

import (
	"os"
	"strings"
	"syscall"
)

const exeSuffix = ""

// Exec replaces this process with d.Exec, same arguments, d.Env added.
func Exec(d Decision) error {
	args := append([]string{d.Exec}, os.Args[1:]...)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, TrialEnv+"=") { // a trial is named by this exec only
			env = append(env, e)
		}
	}
	return syscall.Exec(d.Exec, args, append(env, d.Env...))
}

// Supported reports whether this platform can re-execute into a new build.
const Supported = true
