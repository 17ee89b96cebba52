package discovery

import (
	"slices"
	"testing"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/tcpscan"
)

// TestChunksOfTwoExecutions: a tcp_scan probe whose first bridge died mid-scan runs again
// on a sibling, which splits the range into chunks differently. Whatever order the chunks
// of both executions arrive in, the probe completes only with every chunk of one execution
// in, and every live host of the range is found — never a mix of two executions' seqs that
// loses the hosts of the chunks it skipped.
func TestChunksOfTwoExecutions(t *testing.T) {
	chunk := func(attempt, seq int, final bool, ips ...string) *envelope.Result {
		var hosts []tcpscan.Host
		for _, ip := range ips {
			hosts = append(hosts, tcpscan.Host{IP: ip, Open: []int{22}})
		}
		var data any = tcpscan.Chunk{Hosts: hosts}
		if final {
			data = tcpscan.Summary{Hosts: hosts}
		}
		r := resultOf(t, tcpscan.Kind, final, data)
		r.Attempt, r.Seq = attempt, seq
		return r
	}
	// Execution 1 streamed two chunks and died; execution 2 covers the range in three.
	e1s0, e1s1 := chunk(1, 0, false, "a", "b"), chunk(1, 1, false, "c")
	e2s0, e2s1, e2s2 := chunk(2, 0, false, "d", "c"), chunk(2, 1, false, "a", "e"), chunk(2, 2, true, "b")
	all := []string{"a", "b", "c", "d", "e"}
	cases := []struct {
		name  string
		order []*envelope.Result
		// doneAt is the index in order of the chunk that completes the probe.
		doneAt int
	}{
		{"first execution's chunks, then the second's", []*envelope.Result{e1s0, e1s1, e2s0, e2s1, e2s2}, 4},
		{"interleaved", []*envelope.Result{e1s0, e2s0, e1s1, e2s2, e2s1}, 4},
		{"second execution's final first, late chunks of the first", []*envelope.Result{e2s2, e1s0, e2s0, e1s1, e2s1}, 4},
		{"one execution, out of order", []*envelope.Result{e2s1, e2s2, e2s0}, 2},
		{"results without attempts (older bridges)", []*envelope.Result{chunk(0, 1, true, "b"), chunk(0, 0, false, "a")}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &pendingProbe{Step: StepScan, Kind: tcpscan.Kind}
			found := map[string]bool{}
			done := -1
			for i, res := range tc.order {
				if !p.accepts(res) {
					continue
				}
				final, complete := p.progress(res)
				hosts, err := scanHosts(res)
				if err != nil {
					t.Fatal(err)
				}
				for _, h := range hosts {
					found[h.IP] = true
				}
				p.record(res, final)
				if complete {
					done = i
					break
				}
			}
			if done != tc.doneAt {
				t.Fatalf("complete at chunk %d, want %d", done, tc.doneAt)
			}
			want := all
			if tc.doneAt < 4 {
				want = nil
				for _, res := range tc.order {
					hs, _ := scanHosts(res)
					for _, h := range hs {
						want = append(want, h.IP)
					}
				}
			}
			for _, ip := range want {
				if !found[ip] {
					keys := make([]string, 0, len(found))
					for k := range found {
						keys = append(keys, k)
					}
					slices.Sort(keys)
					t.Fatalf("host %s lost: found %v", ip, keys)
				}
			}
		})
	}
}
