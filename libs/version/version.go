// Package version names the build. The Makefile sets Version with -ldflags -X.
package version

import "runtime/debug"

// Version is the release (or "dev"); set at link time.
var Version = "dev"

// Commit is the VCS revision when the build recorded one.
func Commit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return ""
}

// Semver is Version in the form NATS micro requires for service versions.
func Semver() string {
	if Version == "dev" || Version == "" {
		return "0.0.0-dev"
	}
	if Version[0] == 'v' {
		return Version[1:]
	}
	return Version
}
