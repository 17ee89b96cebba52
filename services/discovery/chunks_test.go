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

// TestScanChunkSize: a range is cut for the site's bridges that can scan — ChunksPerBridge
// chunks each, never below MinChunk nor above ChunkSize — so that N bridges each take a
// share of the chunks; a site with one bridge keeps whole ChunkSize chunks.
func TestScanChunkSize(t *testing.T) {
	def := DefaultConfig()
	cases := []struct {
		name             string
		cfg              Config
		addrs, bridges   int
		wantSize, chunks int
	}{
		{"one bridge, a /20: ChunkSize chunks", def, 4094, 1, 1024, 4},
		{"no bridge known yet: as one", def, 4094, 0, 1024, 4},
		{"three bridges, a /20: four chunks each", def, 4094, 3, 342, 12},
		{"two bridges, a /22: four chunks each", def, 1022, 2, 128, 8},
		{"three bridges, a /24: MinChunk bounds the cut", def, 254, 3, 64, 4},
		{"twenty bridges, a /16: ChunkSize bounds the chunk", def, 65534, 20, 820, 80},
		{"two bridges, a /16: ChunkSize caps", def, 65534, 2, 1024, 64},
		{"ChunkSize below MinChunk wins", Config{ChunkSize: 1}, 2, 3, 1, 2},
		{"zero knobs take the defaults", Config{ChunkSize: 1024}, 4094, 3, 342, 12},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			size := tc.cfg.scanChunkSize(tc.addrs, tc.bridges)
			if chunks := (tc.addrs + size - 1) / size; size != tc.wantSize || chunks != tc.chunks {
				t.Fatalf("%d addresses, %d bridges: chunks of %d (%d chunks), want %d (%d chunks)", tc.addrs, tc.bridges, size, chunks, tc.wantSize, tc.chunks)
			}
		})
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
