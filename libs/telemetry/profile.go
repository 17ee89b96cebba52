package telemetry

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
)

// ProfileEnv names a directory: when set, a process writes its CPU profile there as
// <name>-<pid>.cpu.pprof until it exits (diagnosing a benchmark without changing the code).
const ProfileEnv = "OUTPOST_CPUPROFILE_DIR"

// StartProfile starts the CPU profile ProfileEnv asks for; stop writes it. Without the
// variable it does nothing.
func StartProfile(name string) (stop func()) {
	dir := os.Getenv(ProfileEnv)
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.cpu.pprof", name, os.Getpid())))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", ProfileEnv, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", ProfileEnv, err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}
