package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Write-through. Storing every result locally first, then fetching, publishing, awaiting the
// hub's ack and removing it again cost a quarter of the bridge's CPU per echo probe and most
// of the time from a probe's end to its result at the hub (docs/benchmarks.md). In the
// common case — hub connected, nothing waiting — Send publishes the result straight to the
// hub with the same subject, headers and Nats-Msg-Id the forwarder would use, and waits for
// the hub's stream ack; only on an error, a timeout or a backlog is it stored and forwarded
// as before. At-least-once holds either way: a result counts as sent only once the hub acked
// it, and a direct publish whose ack was lost but which the hub stored is dropped as a
// duplicate (its Nats-Msg-Id, within the hub's window) when the forwarder sends it again.

// DefaultDirectTimeout is how long a direct send waits for the hub's ack before the result
// goes to the outbox instead: the forwarder's AckTimeout, not less. A slow ack is usually a
// stored result whose ack is late (a loaded hub); taking it for a failure stores a second
// copy, which the hub drops by its Nats-Msg-Id only within its duplicate window (2 min). A
// WAN cut right after such a false failure held that copy in the outbox past the window and
// RESULTS kept both (the WAN cut test, under load, with a 2 s timeout here). A worker waits
// this long at most once per DirectPause.
const DefaultDirectTimeout = AckTimeout

// DirectPause is how long after a failed direct send results go to the outbox without
// trying: a hub that is connected but does not ack (a stream leader lost) then costs the
// workers one timeout per pause, not one per result (DirectFirst results ignore a backlog,
// so without it each interactive result would wait the timeout again).
const DirectPause = 5 * time.Second

// Route says how Send may get a result to the hub.
type Route int

const (
	// ViaOutbox stores the result; the forwarder sends it. For a result that must not
	// overtake results of its probe already stored (chunks are read in order: the
	// hub's ad-hoc reply ends at the final result).
	ViaOutbox Route = iota
	// DirectWhenIdle sends straight to the hub when the outbox holds nothing (nothing stored,
	// none in flight), else stores it: a backlog drains in order, and a backlog mostly means
	// the hub was out of reach a moment ago.
	DirectWhenIdle
	// DirectFirst sends straight to the hub even behind a backlog: for small results whose
	// latency matters (interactive).
	DirectFirst
	// Neither tries within DirectPause of a failed direct send.
)

// Send gets one result to the hub durably: directly (direct true: the hub's stream acked it)
// or stored in the outbox (direct false: the forwarder sends it, Config.Sent tells when the
// hub has it). hub is the bridge's connection to the hub; nil sends nothing directly. An
// error means the result is neither at the hub nor stored (ErrFull: the outbox is full).
func (o *Outbox) Send(ctx context.Context, hub *nats.Conn, route Route, subject string, h nats.Header, data []byte) (direct bool, err error) {
	if o.direct(hub, route) {
		derr := o.publishDirect(ctx, hub, subject, h, data)
		if derr == nil {
			o.sentDirect.Add(1)
			return true, nil
		}
		o.directFailed.Store(o.cfg.Clock.Now().UnixNano())
		n := o.directFailures.Add(1)
		o.log.Warn("result not acknowledged by the hub directly; it goes to the outbox (the hub drops a copy it already has)",
			"subject", subject, "err", derr, "direct_failures_total", n)
	}
	if err := o.Put(ctx, subject, h, data); err != nil {
		return false, err
	}
	o.stored.Add(1)
	return false, nil
}

// direct reports whether a result on route is to be tried straight at the hub now.
func (o *Outbox) direct(hub *nats.Conn, route Route) bool {
	if hub == nil || route == ViaOutbox || hub.Status() != nats.CONNECTED {
		return false
	}
	if route == DirectWhenIdle && o.msgs.Load() != 0 {
		return false
	}
	failed := o.directFailed.Load()
	return failed == 0 || o.cfg.Clock.Now().Sub(time.Unix(0, failed)) >= DirectPause
}

// publishDirect is the forwarder's publish of one result, synchronous: a request to the
// subject, answered by the hub's stream (the same reply check as the local store's).
//
// The wait is on the real clock, not Config.Clock: it bounds a network round trip.
func (o *Outbox) publishDirect(ctx context.Context, hub *nats.Conn, subject string, h nats.Header, data []byte) error {
	dctx, cancel := context.WithTimeout(ctx, o.cfg.DirectTimeout)
	defer cancel()
	resp, err := hub.RequestMsgWithContext(dctx, &nats.Msg{Subject: subject, Header: h, Data: data})
	if err != nil {
		return fmt.Errorf("direct publish: %w", err)
	}
	return storeAckError(resp.Data)
}

// SentDirect counts results the hub acknowledged on a direct send.
func (o *Outbox) SentDirect() int64 { return o.sentDirect.Load() }

// Stored counts results Send put in the outbox (a backlog, a result that follows stored
// ones of its probe, no connection, or a direct send that failed).
func (o *Outbox) Stored() int64 { return o.stored.Load() }

// DirectFailures counts direct sends that failed or timed out (their results were stored).
func (o *Outbox) DirectFailures() int64 { return o.directFailures.Load() }
