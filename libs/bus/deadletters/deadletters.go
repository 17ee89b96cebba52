// Package deadletters is the hub's DLQ service (contract libs/api/dlq): show one dead letter
// whole, retry dead letters to their original subject, purge them — and a watch that warns
// (log, counter, event on event.hub.dlq) when the DLQ nears one of its limits, before it
// starts evicting its oldest entries.
//
// Retrying never widens a sender's rights. A dead letter that came from a site (its DLQ
// subject is dlq.<service>.<site>) goes back only to a subject that site's bridges may
// publish themselves (result.<app>.<site>.<kind>.<agent>, event.<site>.…), so the hub
// re-sending it adds nothing a bridge holding its site's rights could not do, and every check
// of the hub (the result's origin against its subject) applies again. A dead letter a bridge
// wrote itself (dlq.bridge.<site>: a probe it could not read, headers and all) is never
// re-published: nothing in it can be trusted to name a subject.
package deadletters

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/outpost-dev/outpost/libs/api/dlq"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/errs"
)

// Config of the DLQ service.
type Config struct {
	Version string // semver of the micro service
	// WarnAt is the fill ratio of a DLQ limit (bytes, messages, one origin's quota) at which
	// the watch warns; it warns again only after the fill dropped below 90 % of WarnAt.
	WarnAt float64
	// CheckEvery is how often the watch reads the DLQ's fill.
	CheckEvery time.Duration
}

// DefaultConfig warns at 80 % and checks every 30 s.
func DefaultConfig() Config {
	return Config{Version: "0.1.0", WarnAt: 0.8, CheckEvery: 30 * time.Second}
}

// Validate reports every problem of the config.
func (c Config) Validate() error {
	var problems []error
	if c.WarnAt <= 0 || c.WarnAt > 1 {
		problems = append(problems, fmt.Errorf("dlq: WarnAt %v: want a ratio in (0, 1]", c.WarnAt))
	}
	if c.CheckEvery <= 0 {
		problems = append(problems, fmt.Errorf("dlq: CheckEvery %v: want a positive duration", c.CheckEvery))
	}
	if c.Version == "" {
		problems = append(problems, errors.New("dlq: Version is required (semver)"))
	}
	return errors.Join(problems...)
}

// Deps are what the service is given.
type Deps struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Logger *slog.Logger
	Clock  clock.Clock
	Meter  metric.Meter // may be nil
}

// Service serves svc.dlq.* and watches the DLQ's fill.
type Service struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	clock clock.Clock
	pub   *bus.Publisher

	retried, purged, nearLimit metric.Int64Counter

	mu     sync.Mutex
	warned map[string]bool // limits warned about, until their fill drops again
}

// New returns the service; Run serves it.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, deps: deps, log: log.With("component", "dlq"), clock: clock.Or(deps.Clock),
		pub: bus.NewPublisher(deps.JS, envelope.ServiceSource(dlq.Service), nil), warned: map[string]bool{}}
	if deps.Meter != nil {
		s.retried, _ = deps.Meter.Int64Counter("outpost.dlq.retried", metric.WithDescription("dead letters sent back to their subject"))
		s.purged, _ = deps.Meter.Int64Counter("outpost.dlq.purged", metric.WithDescription("dead letters deleted by an operator"))
		s.nearLimit, _ = deps.Meter.Int64Counter("outpost.dlq.near_limit", metric.WithDescription("times a DLQ limit reached its warning fill"))
	}
	return s, nil
}

// Endpoints are the service's endpoints, by op name.
func (s *Service) Endpoints() map[string]bus.Endpoint {
	return map[string]bus.Endpoint{
		dlq.Show.Name:  dlq.Show.Handle(s.Show),
		dlq.Retry.Name: dlq.Retry.Handle(s.Retry),
		dlq.Purge.Name: dlq.Purge.Handle(s.Purge),
	}
}

// Run serves the endpoints and the watch until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	svc, err := bus.AddService(ctx, s.deps.NC, bus.ServiceConfig{Name: dlq.Service, Version: s.cfg.Version,
		Description: "dead letters: show, retry, purge", Endpoints: s.Endpoints(), Logger: s.log})
	if err != nil {
		return err
	}
	defer func() { _ = svc.Stop() }()
	t := s.clock.NewTicker(s.cfg.CheckEvery)
	defer t.Stop()
	for {
		s.Check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

func (s *Service) stream(ctx context.Context) (jetstream.Stream, error) {
	st, err := s.deps.JS.Stream(ctx, bus.StreamDLQ)
	if err != nil {
		return nil, bus.Fail(errs.Unavailable, "the DLQ stream is not reachable: %v", err)
	}
	return st, nil
}

// Show returns one dead letter whole.
func (s *Service) Show(ctx context.Context, req dlq.ShowRequest) (dlq.Message, error) {
	st, err := s.stream(ctx)
	if err != nil {
		return dlq.Message{}, err
	}
	raw, err := get(ctx, st, req.Seq)
	if err != nil {
		return dlq.Message{}, err
	}
	return message(raw), nil
}

func get(ctx context.Context, st jetstream.Stream, seq uint64) (*jetstream.RawStreamMsg, error) {
	if seq == 0 {
		return nil, bus.Fail(errs.BadRequest, `field "seq": give the SEQ of a dead letter (outpost dlq ls)`)
	}
	raw, err := st.GetMsg(ctx, seq)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.Is(err, jetstream.ErrMsgNotFound) || errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, bus.Fail(errs.NotFound, "no dead letter %d: it was retried, purged or evicted (outpost dlq ls lists what is there)", seq)
		}
		return nil, bus.Fail(errs.Unavailable, "read dead letter %d: %v", seq, err)
	}
	return raw, nil
}

// message is a dead letter as the contract shows it.
func message(raw *jetstream.RawStreamMsg) dlq.Message {
	h := raw.Header
	m := dlq.Message{Seq: raw.Sequence, Subject: raw.Subject, Origin: origin(raw.Subject), Code: h.Get(bus.HeaderDLQCode),
		Reason: h.Get(bus.HeaderDLQReason), Service: h.Get(bus.HeaderDLQService), SourceSubject: h.Get(bus.HeaderDLQSubject),
		SourceStream: h.Get(bus.HeaderDLQStream), Consumer: h.Get(bus.HeaderDLQConsumer), Time: when(raw), Headers: map[string][]string{}}
	if m.Service == "" {
		m.Service = service(raw.Subject)
	}
	m.SourceSeq, _ = strconv.ParseUint(h.Get(bus.HeaderDLQSeq), 10, 64)
	m.Deliveries, _ = strconv.Atoi(h.Get(bus.HeaderDLQDeliveries))
	m.Retries, _ = strconv.Atoi(h.Get(dlq.HeaderRetry))
	for k, v := range original(h) {
		m.Headers[k] = v
	}
	if utf8.Valid(raw.Data) {
		m.Data = string(raw.Data)
	} else {
		m.Data, m.DataBase64 = base64.StdEncoding.EncodeToString(raw.Data), true
	}
	_, refusal := target(raw)
	m.Retryable, m.RetryRefusal = refusal == "", refusal
	return m
}

// when is the time a message was dead-lettered.
func when(raw *jetstream.RawStreamMsg) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, raw.Header.Get(bus.HeaderDLQTime)); err == nil {
		return t.UTC()
	}
	return raw.Time.UTC()
}

// service is the <service> of dlq.<service>[.<origin>].
func service(subject string) string {
	t := strings.Split(subject, ".")
	if len(t) >= 2 {
		return t[1]
	}
	return ""
}

// origin is the <origin> of dlq.<service>.<origin>: the site a dead letter came from, or
// hub (also for the older dlq.<service> without an origin token).
func origin(subject string) string {
	t := strings.Split(subject, ".")
	if len(t) >= 3 && t[2] != "" {
		return t[2]
	}
	return bus.OriginHub
}

// original is a dead letter's headers without the DLQ's own and the ids of its copy.
func original(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "outpost-dlq-") || strings.HasPrefix(lk, "nats-") {
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}

// target is the subject a dead letter may be retried to, or why it may not be.
func target(raw *jetstream.RawStreamMsg) (string, string) {
	src := raw.Header.Get(bus.HeaderDLQSubject)
	from := origin(raw.Subject)
	switch {
	case service(raw.Subject) == "bridge":
		return "", fmt.Sprintf("a bridge of site %s wrote this dead letter itself (work it could not read), headers and all: "+
			"nothing in it is trusted to name a subject; fix what produced the work and send it again (re-run the discovery or workflow)", from)
	case src == "":
		return "", "the dead letter does not name its original subject"
	case from != bus.OriginHub && !bridgeMayPublish(src, from):
		return "", fmt.Sprintf("it came from site %s but names subject %s, which that site's bridges may not publish: "+
			"retrying it would lend it the hub's rights", from, src)
	}
	return src, ""
}

// bridgeMayPublish reports whether a bridge of site may publish subject itself: its results
// (result.<app>.<site>.<kind>.<agent>) and events (event.<site>.…) — the subjects a dead
// letter of that origin comes from.
func bridgeMayPublish(subject, site string) bool {
	t := strings.Split(subject, ".")
	for _, tok := range t {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
	}
	switch {
	case len(t) == 5 && t[0] == "result":
		return t[2] == site
	case len(t) >= 3 && t[0] == "event":
		return t[1] == site
	}
	return false
}

// Retry sends dead letters back to their original subject with their original headers, a
// retry marker (outpost-retry: n) and an idempotent Nats-Msg-Id, then removes them from the
// DLQ. A dead letter that fails again comes back under a new sequence.
func (s *Service) Retry(ctx context.Context, req dlq.RetryRequest) (dlq.RetryReply, error) {
	if err := req.Validate(); err != nil {
		return dlq.RetryReply{}, bus.Fail(errs.BadRequest, "%v", err)
	}
	st, err := s.stream(ctx)
	if err != nil {
		return dlq.RetryReply{}, err
	}
	seqs := req.Seqs
	if req.All {
		if seqs, err = s.selectSeqs(ctx, st, req.Filter); err != nil {
			return dlq.RetryReply{}, err
		}
	}
	out := dlq.RetryReply{Retried: []dlq.Retried{}, NotRetried: []dlq.NotRetried{}}
	for _, seq := range seqs {
		r, err := s.retryOne(ctx, st, seq)
		if err != nil {
			out.NotRetried = append(out.NotRetried, dlq.NotRetried{Seq: seq, Reason: problemText(err)})
			continue
		}
		out.Retried = append(out.Retried, r)
	}
	s.log.Info("dead letters retried", "retried", len(out.Retried), "not_retried", len(out.NotRetried))
	return out, nil
}

func problemText(err error) string {
	var se *bus.ServiceError
	if errors.As(err, &se) {
		return se.Message
	}
	return err.Error()
}

func (s *Service) retryOne(ctx context.Context, st jetstream.Stream, seq uint64) (dlq.Retried, error) {
	raw, err := get(ctx, st, seq)
	if err != nil {
		return dlq.Retried{}, err
	}
	subject, refusal := target(raw)
	if refusal != "" {
		return dlq.Retried{}, bus.Fail(errs.Forbidden, "%s", refusal)
	}
	h := original(raw.Header)
	n, _ := strconv.Atoi(raw.Header.Get(dlq.HeaderRetry))
	n++
	h.Set(dlq.HeaderRetry, strconv.Itoa(n))
	h.Set(dlq.HeaderRetryOf, strconv.FormatUint(seq, 10))
	// The same dead letter retried twice within the dedup window is published once.
	h.Set(nats.MsgIdHdr, "dlq-retry:"+strconv.FormatUint(seq, 10))
	if _, err := s.deps.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: raw.Data}); err != nil {
		return dlq.Retried{}, bus.Fail(errs.Unavailable, "publish to %s: %v", subject, err)
	}
	if err := st.DeleteMsg(ctx, seq); err != nil {
		// Sent: a second retry within the dedup window is dropped, a later one is a duplicate
		// that idempotent handlers absorb.
		s.log.Warn("dead letter retried but not removed from the DLQ", "seq", seq, "err", err)
	}
	s.log.Info("dead letter retried", "seq", seq, "subject", subject, "retry", n, "code", raw.Header.Get(bus.HeaderDLQCode))
	if s.retried != nil {
		s.retried.Add(ctx, 1, metric.WithAttributes(attribute.String("service", service(raw.Subject))))
	}
	return dlq.Retried{Seq: seq, Subject: subject, Retry: n}, nil
}

// Purge deletes the dead letters the filter selects.
func (s *Service) Purge(ctx context.Context, req dlq.PurgeRequest) (dlq.PurgeReply, error) {
	if err := req.Validate(); err != nil {
		return dlq.PurgeReply{}, bus.Fail(errs.BadRequest, "%v", err)
	}
	st, err := s.stream(ctx)
	if err != nil {
		return dlq.PurgeReply{}, err
	}
	seqs, err := s.selectSeqs(ctx, st, req.Filter)
	if err != nil {
		return dlq.PurgeReply{}, err
	}
	n := 0
	for _, seq := range seqs {
		if err := st.DeleteMsg(ctx, seq); err == nil {
			n++
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return dlq.PurgeReply{Purged: n}, bus.Fail(errs.Unavailable, "purge dead letter %d: %v (%d purged so far)", seq, err, n)
		}
	}
	s.log.Warn("dead letters purged", "purged", n, "code", req.Code, "service", req.Service, "older_than", req.OlderThan)
	if s.purged != nil {
		s.purged.Add(ctx, int64(n))
	}
	return dlq.PurgeReply{Purged: n}, nil
}

// selectSeqs reads the DLQ up to its last sequence now (a retried message that fails again
// comes back after it and is not taken again) and returns the sequences the filter selects.
func (s *Service) selectSeqs(ctx context.Context, st jetstream.Stream, f dlq.Filter) ([]uint64, error) {
	age, _ := f.Age()
	info, err := st.Info(ctx)
	if err != nil {
		return nil, bus.Fail(errs.Unavailable, "DLQ: %v", err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil, nil
	}
	filters := []string{"dlq.>"}
	if f.Service != "" {
		filters = []string{bus.DLQSubject(f.Service), bus.DLQSubject(f.Service) + ".>"}
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, bus.Fail(errs.Unavailable, "read the DLQ: %v", err)
	}
	now := s.clock.Now()
	var out []uint64
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			return nil, bus.Fail(errs.Unavailable, "read the DLQ: %v", err)
		}
		got, done := 0, false
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if md.Sequence.Stream > last {
				done = true
				break
			}
			raw := &jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: md.Sequence.Stream, Header: m.Headers(), Time: md.Timestamp}
			if f.Code != "" && raw.Header.Get(bus.HeaderDLQCode) != f.Code {
				continue
			}
			if age > 0 && now.Sub(when(raw)) < age {
				continue
			}
			out = append(out, md.Sequence.Stream)
			if md.NumPending == 0 {
				done = true
			}
		}
		if done || got == 0 || batch.Error() != nil {
			return out, nil
		}
	}
}

// Check reads the DLQ's fill and warns, once per crossing, about every limit at WarnAt or
// beyond: the stream's bytes and messages, and each origin's quota (MaxMsgsPerSubject), at
// which the DLQ starts evicting that origin's oldest dead letters.
func (s *Service) Check(ctx context.Context) {
	st, err := s.deps.JS.Stream(ctx, bus.StreamDLQ)
	if err != nil {
		s.log.Debug("DLQ fill not read", "err", err)
		return
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("dlq.>"))
	if err != nil {
		s.log.Debug("DLQ fill not read", "err", err)
		return
	}
	c := info.Config
	type fill struct {
		key, what string
		have, max int64
	}
	var fills []fill
	if c.MaxBytes > 0 {
		fills = append(fills, fill{"bytes", "the DLQ's bytes", int64(info.State.Bytes), c.MaxBytes})
	}
	if c.MaxMsgs > 0 {
		fills = append(fills, fill{"msgs", "the DLQ's messages", int64(info.State.Msgs), c.MaxMsgs})
	}
	if c.MaxMsgsPerSubject > 0 {
		for subj, n := range info.State.Subjects {
			fills = append(fills, fill{"subject:" + subj, "dead letters on " + subj, int64(n), c.MaxMsgsPerSubject})
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, f := range fills {
		seen[f.key] = true
		ratio := float64(f.have) / float64(f.max)
		switch {
		case ratio >= s.cfg.WarnAt && !s.warned[f.key]:
			s.warned[f.key] = true
			s.warn(ctx, f.what, f.have, f.max, ratio)
		case ratio < s.cfg.WarnAt*0.9:
			delete(s.warned, f.key)
		}
	}
	for k := range s.warned {
		if !seen[k] {
			delete(s.warned, k)
		}
	}
}

func (s *Service) warn(ctx context.Context, what string, have, limit int64, ratio float64) {
	msg := fmt.Sprintf("%s at %d of %d (%.0f %%): at the limit the DLQ evicts the oldest; retry (outpost dlq retry) or purge (outpost dlq purge) them",
		what, have, limit, ratio*100)
	s.log.Warn("DLQ near its limit", "what", what, "have", have, "limit", limit, "fill", fmt.Sprintf("%.2f", ratio))
	if s.nearLimit != nil {
		s.nearLimit.Add(ctx, 1)
	}
	ev := &envelope.Event{ID: envelope.NewID(), Site: bus.OriginHub, Source: dlq.Service, Type: "dlq_near_limit", Severity: "warning",
		MessageKey: "dlq_near_limit:" + what, Message: msg, Resource: what, Time: s.clock.Now().UTC(),
		Fields: map[string]string{"have": strconv.FormatInt(have, 10), "limit": strconv.FormatInt(limit, 10)}}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.pub.Publish(pctx, bus.EventSubject(bus.OriginHub, dlq.Service), envelope.Meta{ID: ev.ID}, ev); err != nil {
		s.log.Warn("DLQ warning event not published", "err", err)
	}
}
