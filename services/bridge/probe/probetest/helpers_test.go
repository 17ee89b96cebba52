package probetest_test

import "github.com/outpost-dev/outpost/services/bridge/probe/fileread"

func withDirs(cfg any, dirs ...string) any {
	c := cfg.(fileread.Config)
	c.AllowedDirs = dirs
	return c
}
