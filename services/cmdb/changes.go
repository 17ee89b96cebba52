package cmdb

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel/trace"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// Ops of the change events (envelope.Change.Op).
const (
	OpCreated = "created"
	OpUpdated = "updated"
	OpStale   = "stale"
)

// changes makes cmdb.changed.<class> events and ingest receipts. They are written to the
// outbox in the transaction of the change they announce and published by the drainer
// (outbox.go).
//
// Their ce-id (the Nats-Msg-Id) is derived from what caused them — the payload's digest,
// the CI and the op — not drawn at random, so a retried publish, or a payload redelivered
// after its ingest committed but before its ack, is deduplicated by the CHANGES stream
// within its window; after the window a redelivered payload changes nothing anyway
// (ingest is idempotent), so it announces nothing.
type changes struct {
	pub   *bus.Publisher
	log   *slog.Logger
	clock clock.Clock
}

func newChanges(js jetstream.JetStream, tp trace.TracerProvider, log *slog.Logger, clk clock.Clock) *changes {
	return &changes{pub: bus.NewPublisher(js, envelope.ServiceSource(Name), tp), log: log, clock: clk}
}

// announce makes the ingest of p write its change events and, for a payload with an id,
// its receipt in its own transaction (transactional outbox, drained by the drainer); a
// payload whose receipt is stored already gets that receipt published again.
//
// The receipt is kept under the payload's id and content digest (bodyDigest of the
// message, or payloadDigest): the same payload again (a redelivery, a producer resending
// it) replays it, while a different payload that reuses an id is reconciled as what it is.
func (c *changes) announce(prep *ire.Prepared, meta envelope.Meta, p envelope.CIPayload, digest string) {
	effects := func(out ire.Outcome) (string, []store.OutboxMsg, error) {
		msgs, err := c.outcomeMsgs(meta.Run, p, digest, out)
		if err != nil || meta.ID == "" {
			return "", msgs, err
		}
		m, err := c.receiptMsg(meta, p, receiptOf(meta, p, out, c.clock.Now().UTC()))
		if err != nil {
			return "", nil, err
		}
		// The message's body is the receipt's JSON: stored as it is, replayed from it.
		return string(m.Data), append(msgs, m), nil
	}
	replay := func(stored string) ([]store.OutboxMsg, error) {
		var r envelope.Ingested
		if err := json.Unmarshal([]byte(stored), &r); err != nil {
			return nil, fmt.Errorf("stored receipt of payload %s: %w", meta.ID, err)
		}
		m, err := c.receiptMsg(meta, p, &r)
		if err != nil {
			return nil, err
		}
		return []store.OutboxMsg{m}, nil
	}
	key := ""
	if meta.ID != "" {
		key = meta.ID + "|" + hex.EncodeToString([]byte(digest))
	} else {
		replay = nil
	}
	prep.Announce(key, effects, replay)
}

// outcomeMsgs are the change events of every CI an ingest of p created or updated.
func (c *changes) outcomeMsgs(run string, p envelope.CIPayload, digest string, out ire.Outcome) ([]store.OutboxMsg, error) {
	if len(out.Created)+len(out.Updated) == 0 {
		return nil, nil
	}
	at := p.Observed.UTC()
	if p.Observed.IsZero() {
		at = c.clock.Now().UTC()
	}
	msgs := make([]store.OutboxMsg, 0, len(out.Created)+len(out.Updated))
	add := func(op string, chs []ire.Change) error {
		for _, ch := range chs {
			body := envelope.Change{CI: ch.ID, Class: ch.Class, Op: op, Source: p.Source, Attributes: ch.Attributes, Time: at}
			m, err := c.message(bus.ChangeSubject(ch.Class), envelope.Meta{ID: changeID(p.Observed, digest, ch.ID, op), Run: run}, changeBody(&body))
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
		}
		return nil
	}
	if err := add(OpCreated, out.Created); err != nil {
		return nil, err
	}
	if err := add(OpUpdated, out.Updated); err != nil {
		return nil, err
	}
	return msgs, nil
}

// receiptOf tells the payload's producer what its items became (cmdb.ingested.<source>).
func receiptOf(meta envelope.Meta, p envelope.CIPayload, out ire.Outcome, now time.Time) *envelope.Ingested {
	return &envelope.Ingested{Payload: meta.ID, Source: p.Source, Items: len(p.Items), Created: len(out.Created),
		Updated: len(out.Updated), Unchanged: len(out.Unchanged), Conflicts: len(out.Conflicts), Skipped: len(out.Skipped),
		Refs: itemOutcomes(out), Time: now}
}

// receiptMsg is the message of a receipt, with the payload's run. Its id derives from the
// payload's, so a receipt published again for a redelivered payload is dropped by the
// stream's duplicate window; past the window a producer recognises it by Payload.
func (c *changes) receiptMsg(meta envelope.Meta, p envelope.CIPayload, r *envelope.Ingested) (store.OutboxMsg, error) {
	source := p.Source
	if !bus.ValidName(source) {
		source = "other"
	}
	return c.message(bus.IngestedSubject(source), envelope.Meta{ID: changeID(p.Observed, meta.ID, "ingested"), Run: meta.Run}, r)
}

// message encodes one announcement for the outbox, with its headers as it will be published.
func (c *changes) message(subject string, meta envelope.Meta, body envelope.Body) (store.OutboxMsg, error) {
	m, span, err := c.pub.Message(context.Background(), subject, meta, body)
	if err != nil {
		return store.OutboxMsg{}, fmt.Errorf("encode %s: %w", subject, err)
	}
	span.End()
	return store.OutboxMsg{Subject: subject, MsgID: meta.ID, Header: m.Header, Data: m.Data}, nil
}

// payloadDigest identifies a payload by its content (encoding/json sorts map keys, so equal
// payloads have equal digests), for payloads that come without their encoded body
// (svc.cmdb.ingest).
func payloadDigest(p envelope.CIPayload) string {
	b, err := json.Marshal(p)
	if err != nil {
		return ""
	}
	return bodyDigest(b)
}

// bodyDigest identifies a payload by its encoded body. Producers encode payloads with
// encoding/json, which writes the same payload as the same bytes (struct fields in order,
// map keys sorted): a resend has the digest of the first send. (Versions before this one
// keyed receipts by payloadDigest: a payload redelivered across the upgrade is not found
// and is reconciled again, which changes nothing and reports its items unchanged.)
func bodyDigest(body []byte) string {
	sum := sha256.Sum256(body)
	return string(sum[:])
}

// changeID is a ULID whose time is t (the observation) and whose entropy is a hash of
// parts: the same cause always gets the same id, and ids still sort by time.
func changeID(t time.Time, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	sum := h.Sum(nil)
	var id ulid.ULID
	if !t.IsZero() && t.Unix() > 0 {
		_ = id.SetTime(ulid.Timestamp(t))
	}
	copy(id[6:], sum[:10])
	return id.String()
}

// itemOutcomes is an outcome's per-ref view for the receipt.
func itemOutcomes(out ire.Outcome) map[string]envelope.ItemOutcome {
	refs := map[string]envelope.ItemOutcome{}
	for _, g := range []struct {
		op  string
		chs []ire.Change
	}{{envelope.ItemCreated, out.Created}, {envelope.ItemUpdated, out.Updated}, {envelope.ItemUnchanged, out.Unchanged}} {
		for _, ch := range g.chs {
			for _, r := range ch.Refs {
				refs[r] = envelope.ItemOutcome{Outcome: g.op, CI: ch.ID}
			}
		}
	}
	for _, c := range out.Conflicts {
		refs[c.Ref] = envelope.ItemOutcome{Outcome: envelope.ItemConflict, Reason: c.Reason}
	}
	for _, sk := range out.Skipped {
		refs[sk.Ref] = envelope.ItemOutcome{Outcome: envelope.ItemSkipped, Reason: sk.Reason}
	}
	if len(refs) == 0 {
		return nil
	}
	return refs
}
