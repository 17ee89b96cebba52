package bridge

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/bridge/collect"
	"github.com/outpost-dev/outpost/services/bridge/outbox"
)

// startCollectors starts the collectors the config names (none by default). They write to
// the outbox, so they take events before the hub is reachable and through an outage.
func (b *Bridge) startCollectors(ctx context.Context) (*collect.Collectors, error) {
	c := b.cfg.Collect
	if c.Syslog == "" && c.SyslogTLSCert == "" && c.Traps == "" && c.Webhook == "" {
		return nil, nil
	}
	return collect.Start(ctx, collect.Config{Site: b.cfg.Site, Syslog: c.Syslog, SyslogTLS: c.SyslogTLSAddr, SyslogTLSCert: c.SyslogTLSCert, SyslogTLSKey: c.SyslogTLSKey, Traps: c.Traps, TrapUsers: c.TrapUsers, TrapEngineID: c.TrapEngineID, Webhook: c.Webhook,
		WebhookKey: c.WebhookKey, Batch: c.Batch, Clock: b.clock, Logger: b.log}, eventSink{b, c.Batch.WithDefaults()})
}

// eventSink puts collected events and rejected input in the outbox: events on
// event.<site>.<source>, rejects as dead letters on dlq.bridge.<site> with their reason.
type eventSink struct {
	b *Bridge
	// batch bounds one message of events (collect.batch: by default 500 events, 256 KiB):
	// well under the bus's maximum payload (1 MiB), and the hub routes a message's events
	// together.
	batch collect.BatchConfig
}

// Events stores a source's events in as few outbox messages as fit: one event as an Event,
// several as EventBatch messages of at most batch.MaxEvents events and batch.MaxBytes — the
// outbox, the WAN link and the hub's bus then spend per message, not per event.
func (s eventSink) Events(ctx context.Context, source string, evs []*envelope.Event) error {
	for i := 0; i < len(evs); i += s.batch.MaxEvents {
		if err := s.put(ctx, source, evs[i:min(i+s.batch.MaxEvents, len(evs))]); err != nil {
			return err
		}
	}
	return nil
}

func (s eventSink) put(ctx context.Context, source string, evs []*envelope.Event) error {
	b := s.b
	var body envelope.Body = evs[0]
	if len(evs) > 1 {
		batch := &envelope.EventBatch{Events: make([]envelope.Event, len(evs))}
		for i, ev := range evs {
			batch.Events[i] = *ev
		}
		body = batch
	}
	meta := envelope.Meta{Source: envelope.AgentSource(b.cfg.Site, b.cfg.Name), Time: b.clock.Now().UTC()}
	if len(evs) == 1 {
		meta.ID = evs[0].ID
	}
	h, data, err := envelope.Encode(meta, body)
	if err != nil {
		return err
	}
	if len(data) > s.batch.MaxBytes && len(evs) > 1 { // large events: halve until each part fits
		if err := s.put(ctx, source, evs[:len(evs)/2]); err != nil {
			return err
		}
		return s.put(ctx, source, evs[len(evs)/2:])
	}
	if err := b.box.Put(ctx, bus.EventSubject(b.cfg.Site, source), h, data); err != nil {
		if errors.Is(err, outbox.ErrFull) {
			b.log.Warn("outbox full: collected events refused until the hub takes what waits", "source", source)
		}
		return err
	}
	return nil
}

func (s eventSink) Reject(ctx context.Context, source, reason string, sample []byte) {
	b := s.b
	now := b.clock.Now().UTC()
	h := nats.Header{}
	h.Set(bus.HeaderDLQCode, bus.CodeDecode)
	h.Set(bus.HeaderDLQReason, source+" collector: "+reason)
	h.Set(bus.HeaderDLQSubject, bus.EventSubject(b.cfg.Site, source))
	h.Set(bus.HeaderDLQService, "bridge")
	h.Set(bus.HeaderDLQTime, now.Format(time.RFC3339Nano))
	h.Set(nats.MsgIdHdr, "dlq:"+source+":"+b.cfg.Name+":"+strconv.FormatInt(now.UnixNano(), 36)+":"+envelope.NewID())
	if err := b.box.Put(ctx, bus.BridgeDLQSubject(b.cfg.Site), h, sample); err != nil {
		b.log.Warn("bad input not kept", "source", source, "reason", reason, "err", err)
	}
}
