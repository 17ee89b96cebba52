// Package outbox is a bridge's store-and-forward queue: a result that cannot go straight to
// the hub (Send, direct.go: not connected, a backlog, no ack in time) is written to an
// embedded, in-process JetStream store in the data dir (no listener), then forwarded to the
// hub with Nats-Msg-Id = result id, and removed locally only after the hub acknowledged it.
// A hub or WAN outage therefore loses nothing; results wait on disk up to the byte limit.
package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
)

const (
	stream   = "OUTBOX"
	consumer = "forwarder"
	prefix   = "outbox."
)

// AckTimeout is how long the forwarder waits for the hub's publish ack of one result. An
// ack can be lost without the connection dropping (a stream leader change on a clustered
// hub): the result is then sent again later, and the hub drops the copy by its Nats-Msg-Id.
const AckTimeout = 10 * time.Second

// lostAckRetry is when a result whose ack was lost is offered to the forwarder again.
const lostAckRetry = 2 * time.Second

// ErrFull is returned by Put when the outbox holds its byte limit: the bridge stops taking
// work rather than delete unsent results.
var ErrFull = errors.New("outbox full")

// Config of the outbox.
type Config struct {
	Dir      string
	MaxBytes int64
	// Batch bounds the results in flight to the hub at once.
	Batch  int
	Logger *slog.Logger
	// Sent, when set, is called with the Nats-Msg-Id of every message the hub acknowledged.
	Sent func(id string)
	// Clock drives the forwarder's backoff, refresh and ack timeout; default the real one.
	Clock clock.Clock
	// ExecutedMaxMsgs and ExecutedMaxBytes bound the executed-probe store (defaults
	// DefaultExecutedMaxMsgs, DefaultExecutedMaxBytes).
	ExecutedMaxMsgs  int64
	ExecutedMaxBytes int64
	// DirectTimeout bounds Send's wait for the hub's ack of a direct send (default
	// DefaultDirectTimeout).
	DirectTimeout time.Duration
}

// Outbox is the local store and its forwarder.
type Outbox struct {
	cfg   Config
	srv   *bus.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	st    jetstream.Stream
	exec  *Executed
	log   *slog.Logger
	bytes atomic.Int64
	msgs  atomic.Int64
	// lostAcks counts publish acks that never came (see AckTimeout).
	lostAcks atomic.Int64
	// Send's counters (direct.go), and when a direct send last failed (Clock, Unix ns).
	sentDirect, stored, directFailures, directFailed atomic.Int64
}

// Open starts the embedded store (it survives restarts: unsent results are still there).
func Open(ctx context.Context, cfg Config) (*Outbox, error) {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 1 << 30
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 256
	}
	if cfg.DirectTimeout <= 0 {
		cfg.DirectTimeout = DefaultDirectTimeout
	}
	cfg.Clock = clock.Or(cfg.Clock)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ExecutedMaxMsgs <= 0 {
		cfg.ExecutedMaxMsgs = DefaultExecutedMaxMsgs
	}
	if cfg.ExecutedMaxBytes <= 0 {
		cfg.ExecutedMaxBytes = DefaultExecutedMaxBytes
	}
	// The store's own limit is a little above MaxBytes: Full() stops new work at MaxBytes,
	// and the slack lets probes already running finish and store their results. The
	// share of the executed-probe store is for the stream earlier bridges kept it in.
	srv, err := bus.StartServer(bus.ServerConfig{Name: "outbox", StoreDir: filepath.Join(cfg.Dir, "outbox"),
		SyncInterval: time.Second, MaxStore: cfg.MaxBytes + cfg.MaxBytes/8 + cfg.ExecutedMaxBytes + 64<<20, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	nc, err := srv.Connect("outbox")
	if err != nil {
		srv.Shutdown()
		return nil, err
	}
	js, _ := jetstream.New(nc)
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{prefix + ">"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, MaxBytes: cfg.MaxBytes + cfg.MaxBytes/8, Discard: jetstream.DiscardNew,
		Duplicates: 2 * time.Minute,
	})
	if err == nil {
		_, err = js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: consumer,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: cfg.Batch * 2})
	}
	var exec *Executed
	if err == nil {
		exec, err = openExecuted(ctx, js, executedConfig{dir: filepath.Join(cfg.Dir, executedDir),
			maxMsgs: cfg.ExecutedMaxMsgs, maxBytes: cfg.ExecutedMaxBytes, clk: cfg.Clock, log: log})
	}
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return nil, fmt.Errorf("outbox store: %w", err)
	}
	o := &Outbox{cfg: cfg, srv: srv, nc: nc, js: js, st: st, exec: exec, log: log.With("component", "outbox")}
	o.refresh(ctx)
	return o, nil
}

// Close stops the store (unsent results stay on disk for the next start).
func (o *Outbox) Close() {
	o.exec.Close()
	o.nc.Close()
	o.srv.Shutdown()
}

// Executed is the store of the probes this bridge executed (see Executed).
func (o *Outbox) Executed() *Executed { return o.exec }

// Put stores one message for the hub subject. It returns once the message is on local disk.
//
// A plain request to the local stream, not jetstream's PublishMsg: that decodes every
// publish ack from JSON, while a store ack ({"stream":...,"seq":...}) only needs telling
// from an error — one JSON decode and its allocations less per result.
func (o *Outbox) Put(ctx context.Context, subject string, h nats.Header, data []byte) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, putTimeout)
		defer cancel()
	}
	resp, err := o.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: prefix + subject, Header: h, Data: data})
	if err == nil {
		err = storeAckError(resp.Data)
	}
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum bytes") {
			return fmt.Errorf("%w: %v", ErrFull, err)
		}
		return fmt.Errorf("outbox put: %w", err)
	}
	o.msgs.Add(1)
	o.bytes.Add(int64(len(data) + len(subject)))
	return nil
}

// putTimeout bounds a local store write whose context has no deadline.
const putTimeout = 5 * time.Second

// storeAckError reads a stream's reply to a publish: nil for a store ack, the server's
// error otherwise. Only a reply that is not a plain ack is decoded.
func storeAckError(reply []byte) error {
	if bytes.HasPrefix(reply, []byte(`{"stream":`)) && !bytes.Contains(reply, []byte(`"error"`)) {
		return nil
	}
	var ack struct {
		Stream string              `json:"stream"`
		Error  *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(reply, &ack); err != nil {
		return fmt.Errorf("unreadable reply of the local store %q: %w", reply, err)
	}
	if ack.Error != nil {
		return ack.Error
	}
	if ack.Stream == "" {
		return fmt.Errorf("reply of the local store is not a store ack: %q", reply)
	}
	return nil
}

// Bytes is the size of what waits to be sent.
func (o *Outbox) Bytes() int64 { return o.bytes.Load() }

// Pending is the number of results waiting.
func (o *Outbox) Pending() int64 { return o.msgs.Load() }

// Full reports whether the outbox reached its limit: take no new work.
func (o *Outbox) Full() bool { return o.bytes.Load() >= o.cfg.MaxBytes }

func (o *Outbox) refresh(ctx context.Context) {
	if info, err := o.st.Info(ctx); err == nil {
		o.bytes.Store(int64(info.State.Bytes))
		o.msgs.Store(int64(info.State.Msgs))
	}
}

// Forward sends everything to the hub until ctx ends, in batches of async publishes, acking
// each local copy only when the hub's stream acknowledged it. During an outage it retries
// with backoff; nothing is dropped.
func (o *Outbox) Forward(ctx context.Context, hub jetstream.JetStream) error {
	cons, err := o.js.Consumer(ctx, stream, consumer)
	if err != nil {
		return err
	}
	backoff := 100 * time.Millisecond
	tick := o.cfg.Clock.NewTicker(time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-tick.C():
			o.refresh(ctx)
		default:
		}
		batch, err := cons.FetchNoWait(o.cfg.Batch)
		if err != nil {
			o.sleep(ctx, 100*time.Millisecond)
			continue
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) == 0 {
			// Nothing waiting: block briefly for the next result instead of spinning.
			// FetchMaxWait, not a context: the server knows the request's expiry and never
			// delivers into a fetch the client already gave up on (that message would sit
			// unacked for the whole AckWait). Short, so a shutdown is not held up.
			b, err := cons.Fetch(1, jetstream.FetchMaxWait(250*time.Millisecond))
			if err == nil {
				for m := range b.Messages() {
					msgs = append(msgs, m)
				}
			}
			if len(msgs) == 0 {
				o.refresh(ctx)
				continue
			}
		}
		sent := o.send(ctx, hub, msgs)
		// Back off only when the hub took nothing (an outage); results whose ack was lost
		// come back by themselves after AckTimeout and must not slow the others.
		if sent == 0 {
			o.log.Warn("hub did not take every result; retrying", "sent", sent, "batch", len(msgs), "retry_in", backoff)
			o.sleep(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
		} else {
			backoff = 100 * time.Millisecond
		}
	}
	return nil
}

// send publishes a batch to the hub and acks the local copies the hub acknowledged; the rest
// are nacked and come back. Returns how many went through.
//
// One deadline covers the whole batch and, once passed, stays passed for every result still
// waiting: an ack lost without a disconnect (a stream leader change) must not hold the
// forwarder, and with it every later result, for ever. A result whose ack timed out comes
// back only after lostAckRetry, so the batches after it flow meanwhile.
func (o *Outbox) send(ctx context.Context, hub jetstream.JetStream, msgs []jetstream.Msg) int {
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		out := &nats.Msg{Subject: strings.TrimPrefix(m.Subject(), prefix), Header: m.Headers(), Data: m.Data()}
		f, err := hub.PublishMsgAsync(out, jetstream.WithStallWait(5*time.Second))
		if err != nil {
			break
		}
		futures[i] = f
	}
	expired := make(chan struct{})
	timeout := o.cfg.Clock.AfterFunc(AckTimeout, func() { close(expired) })
	defer timeout.Stop()
	// Each ack is awaited on its own: results are settled (and the bridge told) as their
	// acks arrive, not in batch order behind one that never will.
	type outcome struct {
		i        int
		ok, lost bool
	}
	outcomes := make(chan outcome, len(msgs))
	for i, f := range futures {
		if f == nil {
			outcomes <- outcome{i: i}
			continue
		}
		go func() {
			select {
			case <-f.Ok():
				outcomes <- outcome{i: i, ok: true}
			case err := <-f.Err():
				o.log.Debug("forward", "subject", msgs[i].Subject(), "err", err)
				outcomes <- outcome{i: i}
			case <-expired:
				select { // an ack that arrived just before the deadline still counts
				case <-f.Ok():
					outcomes <- outcome{i: i, ok: true}
				default:
					outcomes <- outcome{i: i, lost: true}
				}
			case <-ctx.Done():
				outcomes <- outcome{i: i}
			}
		}()
	}
	sent, timedOut := 0, 0
	for range msgs {
		oc := <-outcomes
		m := msgs[oc.i]
		switch {
		case oc.ok:
			if o.cfg.Sent != nil {
				o.cfg.Sent(m.Headers().Get(nats.MsgIdHdr))
			}
			// A plain ack: if it were lost the result would be forwarded again, and the hub
			// drops the copy by its Nats-Msg-Id. Waiting for each ack's confirmation here
			// would cost a local round trip per result.
			if err := m.Ack(); err == nil {
				sent++
				o.msgs.Add(-1)
				o.bytes.Add(-int64(len(m.Data()) + len(m.Subject()) - len(prefix)))
			}
		case oc.lost:
			// Back after a pause, so the batches behind it go first.
			timedOut++
			_ = m.NakWithDelay(lostAckRetry)
		default:
			_ = m.Nak()
		}
	}
	if timedOut > 0 {
		o.lostAcks.Add(int64(timedOut))
		o.log.Warn("hub acknowledged no result within the ack timeout; they are sent again later (the hub drops duplicates)",
			"timed_out", timedOut, "batch", len(msgs), "ack_timeout", AckTimeout, "lost_acks_total", o.lostAcks.Load())
	}
	return sent
}

// LostAcks counts results whose publish ack did not come within AckTimeout.
func (o *Outbox) LostAcks() int64 { return o.lostAcks.Load() }

func (o *Outbox) sleep(ctx context.Context, d time.Duration) {
	t := o.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
	case <-ctx.Done():
	}
}

// Oldest is when the oldest result still waiting was stored (zero when none waits): how long
// the hub has been missing results, for `outpost-bridge status`.
func (o *Outbox) Oldest(ctx context.Context) time.Time {
	if o.msgs.Load() == 0 {
		return time.Time{}
	}
	info, err := o.st.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return time.Time{}
	}
	return info.State.FirstTime
}
