package cli

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// gcPolicy is how the all-in-one hub collects garbage: it lets its heap grow by a fixed
// headroom over the live heap between collections, within Go's default (100 %) and 50 %.
//
// The hub keeps JetStream, the CMDB and every service in one heap. A large discovery churns
// through results with a live heap of well over 100 MB: collecting at 50 % growth there cuts
// the peak RSS by about a fifth (a /20 discovery: 265 → 217 MB) for ~1 % more GC CPU, and
// 50 % of such a heap is more than the headroom, so nothing changes for it. A steady stream
// of small probes is the other case: a live heap of a few tens of MB, where 50 % growth made
// GC ~19 % of the hub's CPU per echo probe; the number of collections follows the
// allocations over the headroom, so a fixed headroom collects such a heap far less often.
// Measured in the echo bench (same run): hub CPU per probe 82.5–86.5 µs at GOGC 50, 68.5–71
// with this policy (66–69 at 100), peak RSS +14–25 MB. The heap goal it adds is bounded: at
// most headroom − live/2 beside a fixed 50 % (24 MB, at a live heap of 48 MB; none from 96 MB).
type gcPolicy struct {
	headroom uint64 // bytes the heap may grow between collections
	min, max int    // GOGC bounds
}

// hubGC is the hub's policy.
var hubGC = gcPolicy{headroom: 48 << 20, min: 50, max: 100}

// percent is the GOGC for a live heap of live bytes.
func (p gcPolicy) percent(live uint64) int {
	if live == 0 {
		return p.max
	}
	return int(min(max(100*p.headroom/live, uint64(p.min)), uint64(p.max)))
}

// run applies the policy every interval until ctx ends, from the live heap the last GC
// measured. It starts at the least growth, so a hub that starts with a big heap never
// overshoots; a change of less than 5 points is not applied.
func (p gcPolicy) run(ctx context.Context, every time.Duration) {
	cur := p.min
	debug.SetGCPercent(cur)
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return // not measured by this runtime: keep the least growth
		}
		if n := p.percent(sample[0].Value.Uint64()); n-cur >= 5 || cur-n >= 5 || (n != cur && (n == p.min || n == p.max)) {
			cur = n
			debug.SetGCPercent(cur)
		}
	}
}
