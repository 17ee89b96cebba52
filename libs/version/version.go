// Package version names the build. The Makefile sets Version with -ldflags -X.
package version

import (
	"regexp"
	"runtime/debug"
	"strings"
)

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
	v := strings.TrimPrefix(Version, "v")
	if semver.MatchString(v) {
		return v
	}
	// A git describe of an untagged tree ("c088aa5-dirty") or "dev": a pre-release of 0.0.0.
	clean := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' {
			return r
		}
		return '-'
	}, v)
	if clean == "" {
		clean = "dev"
	}
	// A pre-release identifier that is all digits may not start with 0 ("0092912" is not
	// semver): prefix it the way git describe does.
	if clean[0] >= '0' && clean[0] <= '9' {
		clean = "g" + clean
	}
	return "0.0.0-" + clean
}

var semver = regexp.MustCompile(`^\d+\.\d+\.\d+(-[0-9A-Za-z-.]+)?(\+[0-9A-Za-z-.]+)?$`)
