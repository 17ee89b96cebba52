//go:build !windows

package service

import "errors"

// IsService is false off Windows: systemd runs the bridge as a plain process.
func IsService() bool { return false }

// RunService is Windows only.
func RunService(*Runner) error { return errors.New("not a Windows service") }
