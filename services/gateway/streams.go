package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/page"
)

// readStream reads up to n messages of a stream matching filters, from sequence start on,
// and returns them with the cursor of the next page ("" when none is stored yet). It uses a
// short-lived ephemeral consumer (no acks, in memory) deleted before returning: a list does
// not leave consumers behind in `outpost status`.
func readStream(ctx context.Context, js jetstream.JetStream, stream string, filters []string, start uint64, n int) ([]jetstream.Msg, string, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, "", fmt.Errorf("stream %s: %w", stream, err)
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start, FilterSubjects: filters,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, InactiveThreshold: 30 * time.Second,
		MaxRequestBatch: n, Description: "gateway list",
	})
	if err != nil {
		return nil, "", fmt.Errorf("read %s: %w", stream, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = st.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	pending := cons.CachedInfo().NumPending
	var out []jetstream.Msg
	more := false
	for uint64(len(out)) < pending && len(out) < n {
		batch, err := cons.FetchNoWait(n - len(out))
		if err != nil {
			return nil, "", fmt.Errorf("read %s: %w", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			out = append(out, m)
			if md, err := m.Metadata(); err == nil {
				more = md.NumPending > 0
			}
		}
		if batch.Error() != nil || got == 0 {
			break
		}
	}
	next := ""
	if more && len(out) > 0 {
		if md, err := out[len(out)-1].Metadata(); err == nil {
			next = page.EncodeSeq(md.Sequence.Stream + 1)
		}
	}
	return out, next, nil
}

// badInput is the message of an input error, without the status a ServiceError carries.
func badInput(err error) string {
	var se *bus.ServiceError
	if errors.As(err, &se) {
		return se.Message
	}
	return err.Error()
}

// streamPage reads ?cursor=&limit= of a stream list: the start sequence and the page size.
func streamPage(r *http.Request) (uint64, int, error) {
	p, err := pageRequest(r)
	if err != nil {
		return 0, 0, err
	}
	n, err := p.Size()
	if err != nil {
		return 0, 0, err
	}
	start, err := page.DecodeSeq(p.Cursor)
	return start, n, err
}

// AuditEvent is one audit event with its position in EVENTS.
type AuditEvent = gatewayapi.AuditEvent

// listAudit lists audit events oldest first (GET /api/v1/audit?cursor=&limit=): the writes
// made through the API, kept as long as EVENTS keeps them.
func (a *API) listAudit(w http.ResponseWriter, r *http.Request) {
	start, n, err := streamPage(r)
	if err != nil {
		problem(w, r, errs.BadRequest, "Bad request", badInput(err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	msgs, next, err := readStream(ctx, a.deps.JS, bus.StreamEvents, []string{AuditSubject}, start, n)
	if err != nil {
		problem(w, r, errs.Unavailable, "Bus unavailable", err.Error())
		return
	}
	out := make([]AuditEvent, 0, len(msgs))
	for _, m := range msgs {
		ev := AuditEvent{}
		if md, err := m.Metadata(); err == nil {
			ev.Seq = md.Sequence.Stream
		}
		if json.Unmarshal(m.Data(), &ev.Audit) == nil {
			out = append(out, ev)
		}
	}
	writeJSON(w, http.StatusOK, gatewayapi.AuditList{Events: out, NextCursor: next})
}

// dlqPreview is how much of a dead-lettered body the list shows.
const dlqPreview = 2 << 10

// DLQItem is a dead-lettered message as GET /api/v1/dlq lists it.
type DLQItem = gatewayapi.DLQItem

// listDLQ lists dead-lettered messages oldest first (GET /api/v1/dlq?cursor=&limit=&service=).
func (a *API) listDLQ(w http.ResponseWriter, r *http.Request) {
	start, n, err := streamPage(r)
	if err != nil {
		problem(w, r, errs.BadRequest, "Bad request", badInput(err))
		return
	}
	filters := []string{"dlq.>"}
	if svc := r.URL.Query().Get("service"); svc != "" {
		if !bus.ValidName(svc) {
			problem(w, r, errs.BadRequest, "Bad request", `field "service": a service name such as discovery, cmdb or bridge`)
			return
		}
		filters = []string{bus.DLQSubject(svc), bus.DLQSubject(svc) + ".>"}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	msgs, next, err := readStream(ctx, a.deps.JS, bus.StreamDLQ, filters, start, n)
	if err != nil {
		problem(w, r, errs.Unavailable, "Bus unavailable", err.Error())
		return
	}
	items := make([]DLQItem, 0, len(msgs))
	for _, m := range msgs {
		items = append(items, dlqItem(m))
	}
	writeJSON(w, http.StatusOK, gatewayapi.DLQList{Items: items, NextCursor: next})
}

func dlqItem(m jetstream.Msg) DLQItem {
	h := m.Headers()
	it := DLQItem{Subject: m.Subject(), Code: h.Get(bus.HeaderDLQCode), Reason: h.Get(bus.HeaderDLQReason),
		SourceSubject: h.Get(bus.HeaderDLQSubject), SourceStream: h.Get(bus.HeaderDLQStream),
		Service: h.Get(bus.HeaderDLQService), Size: len(m.Data())}
	it.Deliveries, _ = strconv.Atoi(h.Get(bus.HeaderDLQDeliveries))
	if it.Service == "" { // a bridge's outbox dead-letters on dlq.bridge.<site>
		it.Service, _, _ = strings.Cut(strings.TrimPrefix(it.Subject, "dlq."), ".")
	}
	md, _ := m.Metadata()
	t, err := time.Parse(time.RFC3339Nano, h.Get(bus.HeaderDLQTime))
	if md != nil {
		it.Seq = md.Sequence.Stream
		if err != nil {
			t = md.Timestamp
		}
	}
	if !t.IsZero() {
		it.Time = t.UTC().Format(time.RFC3339)
	}
	it.Data, it.DataBase64, it.Truncated = preview(m.Data(), dlqPreview)
	return it
}

// preview is the first max bytes of b as text, cut on a character boundary; base64 of them
// when b is not UTF-8 text.
func preview(b []byte, max int) (string, bool, bool) {
	p := b[:min(len(b), max)]
	if len(p) < len(b) {
		// Back up to the start of a character cut in two (at most 3 bytes).
		for i := 0; i < utf8.UTFMax-1 && len(p) > 0 && !utf8.Valid(p); i++ {
			p = p[:len(p)-1]
		}
	}
	if utf8.Valid(p) {
		return string(p), false, len(p) < len(b)
	}
	p = b[:min(len(b), max)]
	return base64.StdEncoding.EncodeToString(p), true, len(p) < len(b)
}
