package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/seal"
	"github.com/outpost-dev/outpost/libs/telemetry"
	"github.com/outpost-dev/outpost/services/bridge/outbox"
	"github.com/outpost-dev/outpost/services/bridge/probe"
)

// keepAliveEvery is how often a running (or waiting) probe tells the hub it is still being
// worked on; well under the consumers' AckWait (15 s).
const keepAliveEvery = 5 * time.Second

// pullExpiry is how long one pull request of a probe consumer waits at the hub. A bridge
// holds one per priority and probe group (3 when its site's bridges all take the same work;
// 162, one per lane, priority and capability, before groups), so this is the idle cost of a
// site: 5 s (the first bridge's choice, for no recorded reason)
// meant ~32 pull requests/s, each a service import into HUB whose response mapping the
// server then keeps for 2 minutes, plus an idle heartbeat at half the expiry. 30 s is
// nats.go's default; its idle heartbeat (15 s) still tells a pull lost without a disconnect
// (within two heartbeats), a reconnect re-pulls at once, and a leader change or a deleted
// consumer is reported by the server — nothing waits for the expiry to see new work.
const pullExpiry = 30 * time.Second

// recheckAfter are the waits of a pull loop for its next probe after it took one: short
// ones, each followed by a fresh call of the iterator (see probeWaiter), then one as long as
// it takes. 6.35 s of waits, 7 wake-ups once a consumer goes idle.
var recheckAfter = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond,
	400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond}

// resultsInFlight bounds the final results a bridge has on their way to the hub (direct
// sends waiting for the hub's ack) once their workers are free again: the outbox
// forwarder's bound too (outbox.Config.Batch). Beyond it, a worker waits for its result's
// ack as before, so a slow hub still slows the taking of work.
const resultsInFlight = 256

// maxResultBytes keeps one result message under the hub's 1 MiB payload limit with room for
// headers; kinds stream bigger output through Emit.
const maxResultBytes = 900 << 10

// gateOpen reports whether the bridge takes new work now.
func (b *Bridge) gateOpen() bool {
	return b.state.Load() == stateRunning && !b.box.Full()
}

// pull takes probes of one consumer (a probe group of the site at the pool's priority) into
// the priority's pool. In flight per pool never exceeds its size plus the iterators' small
// prefetch. A consumer gone or refused means the site's groups may have changed: the
// supervisor is told (groups.go) and stops this loop if so.
func (b *Bridge) pull(ctx context.Context, p *pool, name string, inflight *sync.WaitGroup) {
	prefetch := max(1, min(cap(p.slots)/2, 32))
	var it jetstream.MessagesContext
	var wait probeWaiter
	closeIt := func() {
		if it == nil {
			return
		}
		// Give back what was prefetched so a sibling bridge takes it at once.
		it.Drain()
		for {
			m, err := it.Next(jetstream.NextMaxWait(time.Second))
			if err != nil {
				break
			}
			_ = m.Nak()
		}
		it = nil
	}
	defer func() {
		// Shutting down: stop at once; anything prefetched is redelivered after AckWait.
		if it != nil {
			it.Stop()
		}
	}()
	fullLogged := false
	for ctx.Err() == nil {
		if !b.gateOpen() {
			closeIt()
			if b.box.Full() && !fullLogged {
				b.log.Warn("outbox full: not taking new work until the hub receives what waits", "outbox_bytes", b.box.Bytes(), "limit", b.cfg.OutboxMax)
				fullLogged = true
			}
			sleep(ctx, b.clock, 200*time.Millisecond)
			continue
		}
		fullLogged = false
		if it == nil {
			cons, err := b.js.Consumer(ctx, bus.StreamProbes, name)
			if err == nil {
				it, err = cons.Messages(jetstream.PullMaxMessages(prefetch), jetstream.PullExpiry(pullExpiry))
				wait = probeWaiter{}
			}
			if err != nil {
				b.log.Debug("consumer not available yet", "consumer", name, "err", err)
				b.groups.suspect()
				sleep(ctx, b.clock, time.Second)
				continue
			}
		}
		jm, err := wait.next(ctx, it)
		if err != nil {
			switch {
			case errors.Is(err, jetstream.ErrMsgIteratorClosed):
				it = nil
			case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
				it.Stop()
				it = nil
				b.groups.suspect()
			}
			continue
		}
		// The group's consumer carries several capabilities: the subject says which.
		capability := bus.ProbeCapability(jm.Subject())
		scanDone, handedBack := b.shareScan(jm, capability)
		if handedBack {
			continue
		}
		// Wait for a worker of this priority, keeping the probe ours meanwhile.
		p.queued.Add(1)
		if !b.acquire(ctx, p, jm) {
			p.queued.Add(-1)
			scanDone()
			_ = jm.Nak()
			return
		}
		p.queued.Add(-1)
		p.busy.Add(1)
		inflight.Add(1)
		go func() {
			// The slot is given back once the probe ran and its final result is recorded
			// (freeSlot, from execute) or at the end, whichever comes first.
			var once sync.Once
			freeSlot := func() { once.Do(func() { p.busy.Add(-1); <-p.slots }) }
			defer func() { freeSlot(); scanDone(); inflight.Done() }()
			defer func() {
				// A panic of the bridge's own code around the kind (runKind recovers the
				// kind's): keep the bridge, and take the probe off the queue so it does
				// not crash a sibling bridge next.
				if v := recover(); v != nil {
					n := b.panics.Add(1)
					b.log.Error("probe execution panicked; the probe is removed from the queue", "subject", jm.Subject(),
						"panic", fmt.Sprint(v), "panics_total", n, "stack", string(debug.Stack()))
					_ = jm.Term()
				}
			}()
			b.execute(context.WithoutCancel(ctx), jm, capability, freeSlot)
		}()
	}
}

// probeWaiter takes a pull loop's next probe from its iterator, around a race in nats.go's
// (v1.55.0) MessagesContext.Next, which decides whether to send the next pull request only
// as it starts and after each message it reads, and skips the decision while the iterator's
// previous pull request is still being sent (pullSubscription.fetchInProgress). When every
// message of that request arrives and is taken before the sending goroutine clears the flag
// — a loop that takes probes as fast as they come, on a busy machine — the Next that follows
// skips the decision, finds nothing buffered and nothing requested, and waits: the consumer
// keeps its work, no pull request waits at the server, and only the iterator's missed-
// heartbeat timer (2 × 15 s at pullExpiry) ends it. The echo bench stood still for ~30 s so
// in 2 of 42 runs with workers freed before their results' acks (3,678 and 159 probes left,
// the iterator's pending count 0, nothing waiting at the server, its loop in Next), and can
// on main, more rarely.
//
// Each call of Next decides again: so after a probe the waiter's first waits are short
// (recheckAfter), each one a new Next, before it waits as long as it takes — with Next's own
// missed-heartbeat detection, which a short wait restarts, for a pull request the server
// lost. A stall now lasts one short wait (50 ms), and an idle loop wakes 7 times after its
// last probe, then sleeps in Next until work or a heartbeat timeout.
type probeWaiter struct {
	quiet int // short waits since the last probe
}

// next is the iterator's next message, or the error of its Next (ctx's when ctx ends).
func (w *probeWaiter) next(ctx context.Context, it jetstream.MessagesContext) (jetstream.Msg, error) {
	for w.quiet < len(recheckAfter) {
		wctx, cancel := context.WithTimeout(ctx, recheckAfter[w.quiet])
		jm, err := it.Next(jetstream.NextContext(wctx))
		cancel()
		switch {
		case err == nil:
			w.quiet = 0
			return jm, nil
		case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			w.quiet++
		default:
			return nil, err
		}
	}
	jm, err := it.Next(jetstream.NextContext(ctx))
	if err == nil {
		w.quiet = 0
	}
	return jm, err
}

func (b *Bridge) acquire(ctx context.Context, p *pool, jm jetstream.Msg) bool {
	t := b.clock.NewTicker(keepAliveEvery)
	defer t.Stop()
	for {
		select {
		case p.slots <- struct{}{}:
			return true
		case <-t.C():
			_ = jm.InProgress()
		case <-ctx.Done():
			return false
		}
	}
}

// execute runs one probe and sends its result(s) to the hub — directly, or through the
// outbox — then acks the probe once the hub has its final result.
// ctx is not cancelled by a shutdown: a probe that started finishes (or meets its deadline).
//
// A probe id this bridge already executed is not executed again, whichever way it comes
// back (an ack lost, AckWait passed while the hub was unreachable, this bridge restarted
// between running it and the hub's ack, a republish with the same id): while it runs here,
// the new delivery waits for the same result; once done, the stored final result is sent
// again instead. The probe id is the idempotency key (orchestration's is run+step+attempt).
//
// freeSlot gives the probe's worker slot back to its pool; execute calls it once the probe
// ran and its final result is recorded, when the result may go on in the background
// (sendSlots), so the next probe runs while this one's result waits for the hub's ack. The
// caller calls it again at the end (it runs once).
func (b *Bridge) execute(ctx context.Context, jm jetstream.Msg, capability string, freeSlot func()) {
	_, p, err := envelope.DecodeInto[*envelope.Probe](jm.Headers(), jm.Data())
	if err != nil {
		b.deadLetter(ctx, jm, err)
		return
	}
	// The probe's execution joins the trace it came with; its results carry it on. Without
	// a tracer only the context is carried: a no-op span per probe still cost its options,
	// attributes and name.
	if tp := b.tracer(); isNoopTracer(tp) {
		ctx = telemetry.Propagator.Extract(ctx, telemetry.HeaderCarrier(jm.Headers()))
	} else {
		var span trace.Span
		ctx, span = telemetry.StartConsumer(ctx, tp, jm.Subject(), telemetry.HeaderCarrier(jm.Headers()))
		span.SetName("probe " + p.Kind)
		span.SetAttributes(attribute.String("outpost.probe", p.ID), attribute.String("outpost.probe.kind", p.Kind),
			attribute.String("outpost.site", p.Site), attribute.String("outpost.agent", b.cfg.Name))
		defer span.End()
	}
	d := delivery{jm: jm, stop: keepAlive(b.clock, jm)}
	b.workMu.Lock()
	if c, ok := b.claims[p.ID]; ok {
		// Running here, or done and on its way to the hub: this delivery is settled with it.
		c.deliveries = append(c.deliveries, d)
		b.workMu.Unlock()
		b.replayed.Add(1)
		b.log.Info("probe redelivered while this bridge holds it; not executed again", "probe", p.ID)
		return
	}
	c := &claim{probe: p.ID, deliveries: []delivery{d}, interactive: p.Priority == envelope.PriorityInteractive}
	b.claims[p.ID] = c
	b.workMu.Unlock()
	defer func() {
		// A panic around the kind (the kind's own is recovered in runKind): forget the claim
		// so it does not hold later deliveries, and let pull's recover take the probe off.
		if v := recover(); v != nil {
			b.release(c, c.finalID, func(jm jetstream.Msg) { _ = jm.Term() })
			panic(v)
		}
	}()

	attempt := 1
	if md, err := jm.Metadata(); err == nil && md.NumDelivered > 0 {
		attempt = int(md.NumDelivered)
	}
	// A first delivery is looked up in the store's index only (a republished id is in it);
	// a redelivery always reads the store.
	rec, err := b.box.Executed().Lookup(ctx, p.ID, attempt > 1)
	if err != nil {
		b.release(c, "", func(jm jetstream.Msg) { _ = jm.NakWithDelay(5 * time.Second) })
		b.log.Error("executed-probe store unreadable; the probe will be redelivered", "probe", p.ID, "err", err)
		return
	}
	if rec != nil {
		b.resend(ctx, c, rec)
		return
	}
	started := b.clock.Now().UTC()
	results := b.runProbe(ctx, c, p, capability, started, attempt)
	b.done.Add(1)
	final := results[len(results)-1]
	for _, r := range results[:len(results)-1] {
		if err := b.store(ctx, c, r); err != nil {
			b.release(c, "", func(jm jetstream.Msg) { _ = jm.NakWithDelay(5 * time.Second) })
			b.log.Error("result not stored; the probe will be redelivered", "probe", p.ID, "err", err)
			return
		}
	}
	subject, h, data, err := b.encodeResult(ctx, final)
	if err == nil {
		// Recorded before the final result leaves (to the hub or the outbox): from here on a
		// redelivery finds the result, whether or not a crash comes first.
		rec := outbox.ExecutedRecord{Probe: p.ID, Attempt: attempt, Results: final.Seq + 1,
			Subject: subject, Header: h, Data: data, Finished: final.Finished}
		if rerr := b.box.Executed().Record(ctx, rec, p.Deadline.Sub(b.clock.Now())+executedMargin); rerr != nil {
			n := b.unrecorded.Add(1)
			b.log.Warn("executed probe not recorded: it may run again if redelivered", "probe", p.ID, "err", rerr, "unrecorded_total", n)
		}
		// Register before sending: if it goes to the outbox, the forwarder may send it at once.
		b.workMu.Lock()
		c.finalID = final.ID
		b.awaiting[final.ID] = c
		b.workMu.Unlock()
		// The probe ran: its result's round trip to the hub need not hold a worker (a
		// worker that waited for it capped a pool of n at n results in flight, and the
		// echo rate at n per round trip). Bounded: with sendSlots taken, it waits here.
		select {
		case b.sendSlots <- struct{}{}:
			defer func() { <-b.sendSlots }()
			freeSlot()
		default:
		}
		var direct bool
		direct, err = b.sendTraced(ctx, c, subject, h, data)
		if err == nil && direct {
			// The hub's stream acked the result: the probe is done.
			b.release(c, final.ID, func(jm jetstream.Msg) { _ = jm.Ack() })
			return
		}
	}
	if err != nil {
		b.release(c, final.ID, func(jm jetstream.Msg) { _ = jm.NakWithDelay(5 * time.Second) })
		b.log.Error("result not stored; the probe will be redelivered", "probe", p.ID, "err", err)
	}
	// The result is in the outbox; the probe is acked by onSent when the hub has it.
}

// executedMargin keeps an executed probe's record a while past its deadline: the hub's and
// the bridge's clocks differ, and a probe in flight at its deadline may still come back.
const executedMargin = 15 * time.Minute

// delivery is one delivery of a probe message, kept alive at the hub until it is settled.
type delivery struct {
	jm   jetstream.Msg
	stop func()
}

// claim is a probe this bridge is executing, or has executed and whose final result is on
// its way to the hub, with every delivery of it that reached this bridge meanwhile.
type claim struct {
	probe      string
	finalID    string
	deliveries []delivery
	// interactive: its results try the hub directly even behind an outbox backlog
	// (outbox.DirectFirst). stored: a result of this execution went to the outbox, so the
	// rest follow it there (in order: the hub's ad-hoc reply ends at the final result, and
	// a reader of chunks must not see the final one first).
	interactive bool
	stored      atomic.Bool
}

// route is how the next result of the claim may travel to the hub.
//
// Interactive results try the hub first even when the outbox has a backlog: they are small
// and few (one pool of 10 by default), a user waits for them, and the backlog — standard
// work stored while the hub was out of reach, or a discovery's flood — is sent in order by
// one forwarder in batches of 256: behind it, an ad-hoc probe would wait for all of it.
// Probes do not depend on one another's order, so nothing is lost by letting it pass; a hub
// that is connected yet does not ack costs it at most one timeout per outbox.DirectPause.
// Other results take the hub directly only with an empty outbox: a backlog drains in order,
// and means the hub was out of reach a moment ago.
func (c *claim) route() outbox.Route {
	switch {
	case c == nil || c.stored.Load():
		return outbox.ViaOutbox
	case c.interactive:
		return outbox.DirectFirst
	}
	return outbox.DirectWhenIdle
}

// release forgets a claim and settles its deliveries with settle.
func (b *Bridge) release(c *claim, finalID string, settle func(jetstream.Msg)) {
	b.workMu.Lock()
	if b.claims[c.probe] == c {
		delete(b.claims, c.probe)
	}
	if finalID != "" && b.awaiting[finalID] == c {
		delete(b.awaiting, finalID)
	}
	ds := c.deliveries
	c.deliveries = nil
	b.workMu.Unlock()
	for _, d := range ds {
		d.stop()
		settle(d.jm)
	}
}

// resend answers a redelivered probe that this bridge already executed with its stored final
// result, straight to the hub (which drops the copy by its id if it has it), then acks it.
// The outbox may still hold the result too; the hub keeps one.
func (b *Bridge) resend(ctx context.Context, c *claim, rec *outbox.ExecutedRecord) {
	n := b.replayed.Add(1)
	b.log.Info("probe already executed here; its stored result is sent again instead of running it twice",
		"probe", rec.Probe, "attempt", rec.Attempt, "result", rec.FinalID(), "replayed_total", n)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := b.js.PublishMsg(pctx, rec.Msg()); err != nil {
		b.log.Warn("stored result not re-sent; the probe will be redelivered", "probe", rec.Probe, "err", err)
		b.release(c, "", func(jm jetstream.Msg) { _ = jm.NakWithDelay(5 * time.Second) })
		return
	}
	b.release(c, "", func(jm jetstream.Msg) { _ = jm.Ack() })
}

// onSent acks the probe whose final result the hub just acknowledged.
func (b *Bridge) onSent(resultID string) {
	b.workMu.Lock()
	c, ok := b.awaiting[resultID]
	b.workMu.Unlock()
	if ok {
		b.release(c, resultID, func(jm jetstream.Msg) { _ = jm.Ack() })
	}
}

// runProbe produces the results of one probe: chunks emitted by the kind, then a final one.
// attempt is the execution (the probe's delivery count): it is in every result's id, so the
// chunks of two executions of one probe never share an id nor pass for one another.
//
// c is the probe's claim (how its chunks travel); nil in tests that emit no chunk.
func (b *Bridge) runProbe(ctx context.Context, c *claim, p *envelope.Probe, capability string, started time.Time, attempt int) []*envelope.Result {
	seq := 0
	var chunks []*envelope.Result
	result := func(status envelope.Status, data any, e *envelope.Error, final bool) *envelope.Result {
		r := &envelope.Result{ID: ResultID(p.ID, attempt, seq), Probe: p.ID, Run: p.Run, App: p.App, Agent: b.cfg.Name,
			Site: b.cfg.Site, Kind: p.Kind, Status: status, Seq: seq, Final: final, Attempt: attempt, Started: started,
			Finished: b.clock.Now().UTC(), Error: e}
		if data != nil {
			raw, err := json.Marshal(data)
			switch {
			case err != nil:
				r.Status, r.Error = envelope.StatusError, &envelope.Error{Code: probe.CodeInternal, Message: "result data: " + err.Error()}
			case len(raw) > maxResultBytes:
				r.Status, r.Error = envelope.StatusError, &envelope.Error{Code: probe.CodeTooLarge,
					Message: fmt.Sprintf("result data is %d bytes, beyond the %d-byte message limit; the %s kind must stream it in chunks", len(raw), maxResultBytes, p.Kind)}
			default:
				r.Data = raw
			}
		}
		seq++
		return r
	}
	deny := func(format string, args ...any) []*envelope.Result {
		msg := fmt.Sprintf(format, args...)
		b.log.Warn("probe denied", "probe", p.ID, "kind", p.Kind, "target", p.Target, "reason", msg)
		return []*envelope.Result{result(envelope.StatusDenied, nil, &envelope.Error{Code: probe.CodeDenied, Message: msg}, true)}
	}
	if p.Site != b.cfg.Site {
		return deny("probe for site %s reached a bridge of site %s", p.Site, b.cfg.Site)
	}
	if lane := bus.ProbeLane(p.App); !bus.Serves(b.cfg.Apps, lane) {
		// The callout gives this bridge no consumer of the lane: only a forged or misrouted
		// probe gets here.
		return deny("probe of application %s reached a bridge serving only %v", lane, b.cfg.Apps)
	}
	runner, ok := b.runners[p.Kind]
	if !ok || b.kindCap[p.Kind] != capability {
		return deny("kind %s is not offered by this bridge (capability %s)", p.Kind, capability)
	}
	if b.clock.Now().After(p.Deadline) {
		return []*envelope.Result{result(envelope.StatusTimeout, nil, &envelope.Error{Code: probe.CodeExpired, Message: "the probe's deadline passed before a worker took it: not run"}, true)}
	}
	rctx, cancel := context.WithDeadline(ctx, p.Deadline)
	defer cancel()
	if err := b.allow.checkTarget(rctx, p.Target); err != nil {
		return deny("%v", err)
	}
	emit := func(ectx context.Context, data any) error {
		r := result(envelope.StatusPartial, data, nil, false)
		chunks = append(chunks, r)
		// Chunks leave as they come so a long scan streams home.
		if err := b.store(ectx, c, r); err != nil {
			return err
		}
		chunks = chunks[:len(chunks)-1]
		return nil
	}
	creds, err := b.openSecrets(p)
	if err != nil {
		return []*envelope.Result{result(envelope.StatusError, nil, &envelope.Error{Code: probe.CodeAuth, Message: err.Error()}, true)}
	}
	// A hub (compromised or mistaken) must not get a secret sent to a protocol it was not
	// stored for: an SSH password as an HTTP Authorization header reads it back.
	if err := probe.CheckCredentials(p.Kind, creds); err != nil {
		var pe *probe.Error
		errors.As(err, &pe)
		return deny("%s", pe.Message)
	}
	data, err := b.runKind(rctx, runner, probe.Request{Probe: *p, Target: p.Target, Params: p.Params, Credentials: creds}, emit)
	var final *envelope.Result
	var pe *probe.Error
	switch {
	case errors.As(err, &pe) && pe.Code == probe.CodePanic:
		final = result(envelope.StatusError, nil, &envelope.Error{Code: probe.CodePanic, Message: pe.Message}, true)
	case err == nil:
		final = result(envelope.StatusOK, data, nil, true)
	case rctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) || probe.CodeOf(err) == probe.CodeTimeout:
		final = result(envelope.StatusTimeout, data, &envelope.Error{Code: probe.CodeTimeout, Message: "deadline " + p.Deadline.Format(time.RFC3339) + " passed"}, true)
	case probe.CodeOf(err) == probe.CodeDenied:
		final = result(envelope.StatusDenied, data, &envelope.Error{Code: probe.CodeDenied, Message: err.Error()}, true)
	default:
		msg := err.Error()
		if errors.As(err, &pe) {
			msg = pe.Message
		}
		final = result(envelope.StatusError, data, &envelope.Error{Code: probe.CodeOf(err), Message: msg}, true)
	}
	return append(chunks, final)
}

// runKind runs one probe in its kind, turning a panic into a CodePanic error: one bad kind
// (or one input that trips it) must not take down the bridge and every probe in flight
// with it. The probe then gets a final "panic" result and is acked like any other, so it is
// not redelivered to crash a sibling; the stack goes to the bridge log only (it may hold
// target data, and the result travels to the hub).
func (b *Bridge) runKind(ctx context.Context, runner probe.Runner, req probe.Request, emit probe.Emit) (data any, err error) {
	defer func() {
		if v := recover(); v != nil {
			n := b.panics.Add(1)
			b.log.Error("probe kind panicked; the probe is answered with code panic and not retried",
				"probe", req.Probe.ID, "kind", req.Probe.Kind, "panic", fmt.Sprint(v), "panics_total", n, "stack", string(debug.Stack()))
			data, err = nil, probe.Errorf(probe.CodePanic, "the %s kind panicked: %v (a bug in the bridge; its stack is in the bridge log)", req.Probe.Kind, v)
		}
	}()
	return runner.Run(ctx, req, emit)
}

// openSecrets opens the credentials sealed to this bridge's curve key, in the probe's order.
// A credential with no copy for us is skipped with a log line (we were approved after the
// probe was sealed); when none opens, the probe fails with a clear error instead of running
// without credentials.
func (b *Bridge) openSecrets(p *envelope.Probe) ([]probe.Credential, error) {
	if len(p.Secrets) == 0 {
		return nil, nil
	}
	var out []probe.Credential
	var errs []error
	for _, sc := range p.Secrets {
		if err := b.hubKey.check(sc.Sender); err != nil {
			errs = append(errs, fmt.Errorf("credential %s: %w", sc.Name, err))
			continue
		}
		s, err := seal.Open(b.id.XKey, sc, p.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, probe.Credential{Name: s.Name, Type: s.Type, Username: s.Username, Secret: s.Secret, Fields: s.Fields, AllowInsecure: s.AllowInsecure})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("none of the %d credentials could be opened by this bridge: %w", len(p.Secrets), errors.Join(errs...))
	}
	if len(errs) > 0 {
		b.log.Warn("some credentials were not sealed for this bridge", "probe", p.ID, "skipped", len(errs))
	}
	return out, nil
}

// ResultID is the id of a result: probe, execution and chunk. Deterministic, so a result
// sent twice (from the outbox, from the executed-probe store) is dropped by the hub's
// Nats-Msg-Id window and by idempotent readers; distinct across executions of a probe.
func ResultID(probe string, attempt, seq int) string {
	return probe + "-" + strconv.Itoa(attempt) + "-" + strconv.Itoa(seq)
}

// store sends a chunk of claim c to the hub, directly or through the outbox (waiting, not
// failing, while the outbox is full).
func (b *Bridge) store(ctx context.Context, c *claim, r *envelope.Result) error {
	subject, h, data, err := b.encodeResult(ctx, r)
	if err != nil {
		return err
	}
	_, err = b.sendTraced(ctx, c, subject, h, data)
	return err
}

// tracer is the bridge's tracer provider, no-op without one.
func (b *Bridge) tracer() trace.TracerProvider {
	if b.deps.Tracer == nil {
		return tracenoop.NewTracerProvider()
	}
	return b.deps.Tracer
}

// isNoopTracer reports whether tp records nothing (the bridge runs without a tracer).
func isNoopTracer(tp trace.TracerProvider) bool {
	_, off := tp.(tracenoop.TracerProvider)
	return off
}

// sendTraced is send inside an "outbox" producer span (the outbox sends the result, directly
// or stored: attribute outpost.result.direct) whose context replaces the result's
// traceparent: the hub's consumer of the result is its child, whether it went directly or
// whenever the outbox forwards it (the header is stored with the message, so also after a
// restart or a resend from the executed-probe store).
func (b *Bridge) sendTraced(ctx context.Context, c *claim, subject string, h nats.Header, data []byte) (direct bool, err error) {
	tp := b.tracer()
	if isNoopTracer(tp) {
		return b.send(ctx, c, subject, h, data)
	}
	_, span := telemetry.StartProducer(ctx, tp, subject, telemetry.HeaderCarrier(h))
	span.SetName("outbox " + subject)
	defer span.End()
	direct, err = b.send(ctx, c, subject, h, data)
	span.SetAttributes(attribute.Bool("outpost.result.direct", direct))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return direct, err
}

// encodeResult is a result as it goes to the hub: subject, headers, body.
func (b *Bridge) encodeResult(ctx context.Context, r *envelope.Result) (string, nats.Header, []byte, error) {
	meta := envelope.Meta{ID: r.ID, Source: envelope.AgentSource(b.cfg.Site, b.cfg.Name), Time: b.clock.Now().UTC(), Run: r.Run}
	h, data, err := envelope.Encode(meta, r)
	if err != nil {
		return "", nil, nil, err
	}
	// the probe's trace context (traceparent) goes back with its result
	telemetry.Propagator.Inject(ctx, telemetry.HeaderCarrier(h))
	return bus.ResultSubject(r.App, r.Site, r.Kind, b.cfg.Name), h, data, nil
}

// send gets an encoded result of claim c to the hub: directly when c's route and the outbox
// allow (direct true: the hub acked it), else into the outbox, waiting (not failing) while it
// is full. Once a result of c went to the outbox, c's further results follow it there.
func (b *Bridge) send(ctx context.Context, c *claim, subject string, h nats.Header, data []byte) (direct bool, err error) {
	for {
		direct, err = b.box.Send(ctx, b.nc, c.route(), subject, h, data)
		if err == nil && !direct && c != nil {
			c.stored.Store(true)
		}
		if !errors.Is(err, outbox.ErrFull) {
			return direct, err
		}
		select {
		case <-ctx.Done():
			return false, err
		case <-b.clock.After(500 * time.Millisecond):
		}
	}
}

// deadLetter sends a probe the bridge cannot read to the DLQ with the reason, and removes it
// from the work queue: no redelivery loop, and the bridge keeps working.
func (b *Bridge) deadLetter(ctx context.Context, jm jetstream.Msg, cause error) {
	md, _ := jm.Metadata()
	h := nats.Header{}
	for k, v := range jm.Headers() {
		h[k] = v
	}
	set := func(k, v string) { h[k] = []string{v} }
	set(bus.HeaderDLQCode, bus.CodeDecode)
	set(bus.HeaderDLQReason, "decode: "+cause.Error())
	set(bus.HeaderDLQSubject, jm.Subject())
	set(bus.HeaderDLQStream, bus.StreamProbes)
	set(bus.HeaderDLQService, "bridge")
	set(bus.HeaderDLQTime, b.clock.Now().UTC().Format(time.RFC3339Nano))
	if md != nil {
		set(bus.HeaderDLQSeq, strconv.FormatUint(md.Sequence.Stream, 10))
		set(bus.HeaderDLQDeliveries, strconv.FormatUint(md.NumDelivered, 10))
		set(bus.HeaderDLQConsumer, md.Consumer)
		set(nats.MsgIdHdr, "dlq:"+bus.StreamProbes+":"+strconv.FormatUint(md.Sequence.Stream, 10))
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := b.js.PublishMsg(pctx, &nats.Msg{Subject: bus.BridgeDLQSubject(b.cfg.Site), Header: h, Data: jm.Data()}); err != nil {
		b.log.Error("dead-letter failed; the probe will be retried", "err", err)
		_ = jm.NakWithDelay(10 * time.Second)
		return
	}
	b.log.Warn("unreadable probe dead-lettered", "subject", jm.Subject(), "reason", cause)
	_ = jm.Ack()
}

// keepAlive sends InProgress every keepAliveEvery until stopped; a timer, not a goroutine,
// so the thousands of short probes that never need it cost nothing.
func keepAlive(clk clock.Clock, jm jetstream.Msg) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t clock.Timer
	mu.Lock()
	t = clk.AfterFunc(keepAliveEvery, func() {
		_ = jm.InProgress()
		mu.Lock()
		if !stopped {
			t.Reset(keepAliveEvery)
		}
		mu.Unlock()
	})
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

func sleep(ctx context.Context, clk clock.Clock, d time.Duration) {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
	case <-ctx.Done():
	}
}
