package discovery

import (
	"slices"
	"strings"
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

// TestScanChunks: a range is cut for the site's bridges that can scan. One bridge gets whole
// ChunkSize chunks; several get chunks that shrink as the range is used up — the first the
// addresses over bridges × ChunksPerBridge (what an even cut gives), each later one the
// addresses left over the same, never below MinChunk (but the range's last) nor above
// ChunkSize — and every address is in exactly one chunk, in order.
func TestScanChunks(t *testing.T) {
	def := DefaultConfig()
	cases := []struct {
		name                string
		cfg                 Config
		addrs, bridges      int
		first, chunks, last int
	}{
		{"one bridge, a /20: ChunkSize chunks", def, 4094, 1, 1024, 4, 1022},
		{"no bridge known yet: as one", def, 4094, 0, 1024, 4, 1022},
		{"three bridges, a /20: an even cut's first, then shrinking", def, 4094, 3, 342, 32, 11},
		{"two bridges, a /22", def, 1022, 2, 128, 14, 9},
		{"three bridges, a /22 (the e2e test's)", def, 1022, 3, 86, 16, 16},
		{"three bridges, a /24: MinChunk bounds the cut", def, 254, 3, 64, 4, 62},
		{"two bridges, a /25: MinChunk bounds the cut", def, 126, 2, 64, 2, 62},
		{"twenty bridges, a /16: ChunkSize bounds nothing", def, 65534, 20, 820, 283, 9},
		{"two bridges, a /16: ChunkSize caps the first", def, 65534, 2, 1024, 85, 44},
		{"ChunkSize below MinChunk wins", Config{ChunkSize: 1}, 2, 3, 1, 2, 1},
		{"zero knobs take the defaults", Config{ChunkSize: 1024}, 4094, 3, 342, 32, 11},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sizes := tc.cfg.scanChunks(tc.addrs, tc.bridges)
			if len(sizes) != tc.chunks || sizes[0] != tc.first || sizes[len(sizes)-1] != tc.last {
				t.Fatalf("%d addresses, %d bridges: %d chunks, first %d, last %d (%v); want %d chunks, first %d, last %d",
					tc.addrs, tc.bridges, len(sizes), sizes[0], sizes[len(sizes)-1], sizes, tc.chunks, tc.first, tc.last)
			}
			sum := 0
			for i, n := range sizes {
				sum += n
				if n < 1 || n > max(tc.cfg.ChunkSize, 1) || i > 0 && n > sizes[i-1] {
					t.Fatalf("chunk %d of %d addresses: want 1..%d and no larger than the one before (%v)", i, n, tc.cfg.ChunkSize, sizes)
				}
			}
			if sum != tc.addrs {
				t.Fatalf("chunks cover %d addresses, want %d (%v)", sum, tc.addrs, sizes)
			}
		})
	}
	if got := def.scanChunks(0, 3); len(got) != 0 {
		t.Errorf("no address: chunks %v, want none", got)
	}
	bad := DefaultConfig()
	bad.DataDir, bad.ChunksPerBridge, bad.MinChunk = "x", -1, 70000
	err := bad.Validate()
	for _, want := range []string{"chunks per bridge -1", "min chunk 70000"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want %q", err, want)
		}
	}
}
