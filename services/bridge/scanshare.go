package bridge

import (
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/tcpscan"
)

// A site's bridges share a discovery's scan by taking its chunks from one consumer, which
// hands each chunk to whichever bridge's pull request is waiting — all of a run's chunks
// go out at once, so one bridge may get eight and a sibling none. A bridge's tcp_scan rate
// is one budget for everything it scans (services/bridge/probe/tcpscan), so chunks held
// beyond a couple run no faster there: they only wait while a sibling idles. A bridge that
// runs scanHold scans already hands a further chunk back (a Nak with a delay) for a sibling
// to take; after scanHandBacks deliveries it keeps it — a lone bridge, or siblings as busy,
// loses nothing but the delay, and the consumer's MaxDeliver (20) is never reached this way.
// The delay grows after the first few hand-backs (handBackDelay): with a fixed 2 s the
// window was 24 s, and on a large range (a /18, or a low rate) where every bridge is busy
// for longer than that, the chunks still waiting were kept by whichever bridge got their
// last delivery — the lottery sharing is meant to avoid. A chunk whose deadline is near is
// kept rather than bounced into a timeout.
const (
	scanHold             = 2
	scanHandBacks        = 12
	scanHandBackDelay    = 2 * time.Second
	scanHandBackMaxDelay = 30 * time.Second
	scanHandBackQuick    = 4 // deliveries handed back after scanHandBackDelay before it grows
)

// handBackDelay is the Nak delay of a chunk's delivery-th hand-back (1-based): 2 s for the
// first scanHandBackQuick, then doubling up to scanHandBackMaxDelay — about 2.5 minutes over
// scanHandBacks deliveries, well inside a scan chunk's deadline (10 minutes by default).
func handBackDelay(delivery uint64) time.Duration {
	d := scanHandBackDelay
	for i := uint64(scanHandBackQuick); i < delivery && d < scanHandBackMaxDelay; i++ {
		d *= 2
	}
	return min(d, scanHandBackMaxDelay)
}

// scanShare counts the tcp_scan probes this bridge holds and the chunks it handed back.
type scanShare struct {
	held       atomic.Int64
	handedBack atomic.Int64
}

// shareScan decides on a probe just pulled: a tcp_scan beyond scanHold is handed back
// (handedBack true, the message is settled); otherwise done is to be called once the probe
// is finished with.
func (b *Bridge) shareScan(jm jetstream.Msg, capability string) (done func(), handedBack bool) {
	nothing := func() {}
	if capability != tcpscan.Capability {
		return nothing, false
	}
	_, p, err := envelope.DecodeInto[*envelope.Probe](jm.Headers(), jm.Data())
	if err != nil || p.Kind != tcpscan.Kind {
		return nothing, false // execute dead-letters what does not decode
	}
	if n := b.scans.held.Add(1); n > scanHold {
		md, err := jm.Metadata()
		if err == nil && md.NumDelivered < scanHandBacks && p.Deadline.Sub(clock.Or(b.clock).Now()) > 4*handBackDelay(md.NumDelivered) {
			if jm.NakWithDelay(handBackDelay(md.NumDelivered)) == nil {
				b.scans.held.Add(-1)
				total := b.scans.handedBack.Add(1)
				b.log.Debug("scan chunk handed back for a sibling bridge: this bridge's scan rate is taken", "probe", p.ID,
					"scans_held", n-1, "delivery", md.NumDelivered, "handed_back_total", total)
				return nil, true
			}
		}
	}
	// Which chunks a bridge ran, when, and with how many others: what tells where a shared
	// scan loses time (docs/benchmarks.md); debug only, a run has a few dozen chunks. Wall
	// time: the duration is for the log only.
	took := time.Now()
	delivery := uint64(0)
	if md, err := jm.Metadata(); err == nil {
		delivery = md.NumDelivered
	}
	b.log.Debug("scan chunk taken", "probe", p.ID, "scans_held", b.scans.held.Load(), "delivery", delivery)
	return func() {
		n := b.scans.held.Add(-1)
		b.log.Debug("scan chunk finished", "probe", p.ID, "held_for", time.Since(took).Round(time.Millisecond), "scans_held", n,
			"probes_done", b.done.Load())
	}, false
}
