//go:build unix

package tcpscan

import (
	"math"
	"syscall"
)

// raiseNoFile lifts the soft open-file limit to the hard one (Go does this at start on
// Linux; an embedding program may have lowered it) and returns the soft limit.
func raiseNoFile() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 1024
	}
	if r.Cur < r.Max {
		nr := r
		nr.Cur = r.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nr) == nil {
			r = nr
		}
	}
	if r.Cur > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(r.Cur)
}
