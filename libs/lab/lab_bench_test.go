package lab_test

import (
	"testing"
)

// Starting and stopping labs: the 1,000-host case is what scan benchmarks pay.
func BenchmarkStartClose(b *testing.B) {
	for _, n := range []int{60, 1000} {
		b.Run(itoa(n)+"hosts", func(b *testing.B) {
			for b.Loop() {
				l := startLabNoCleanup(b, "127.77.216.0/22", n)
				l.Close()
			}
		})
	}
}
