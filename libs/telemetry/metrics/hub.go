package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// HubConfig configures the hub's view of the bus.
type HubConfig struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Logger *slog.Logger
	// Now is the clock of latencies and rates; nil is time.Now.
	Now func() time.Time
	// QueryTimeout bounds the bus queries one scrape makes (streams, consumers, heartbeats);
	// 0 is 3 s.
	QueryTimeout time.Duration
	// AlertsBucket is the correlation service's alert bucket, whose writes are counted
	// (alerts opened or changed); empty: "correlation_alerts".
	AlertsBucket string
}

// Validate reports every problem at once.
func (c HubConfig) Validate() error {
	var errs []error
	if c.NC == nil {
		errs = append(errs, errors.New("metrics: no NATS connection"))
	}
	if c.JS == nil {
		errs = append(errs, errors.New("metrics: no JetStream context"))
	}
	if c.QueryTimeout < 0 {
		errs = append(errs, fmt.Errorf("metrics: query timeout %s: want a positive duration (0 for 3 s)", c.QueryTimeout))
	}
	return errors.Join(errs...)
}

// Hub counts what crosses the bus (results, CMDB receipts, alert writes: plain NATS
// subscriptions that see every message JetStream stores, taking nothing from the services'
// durable consumers) and reads lag, the DLQ and the bridges' heartbeats when scraped.
type Hub struct {
	cfg HubConfig
	log *slog.Logger

	probes    *prometheus.CounterVec   // final results by kind and status
	chunks    prometheus.Counter       // every result message (chunks included)
	duration  *prometheus.HistogramVec // probe execution: finished - started
	delay     *prometheus.HistogramVec // from the bridge to the hub: seen - finished
	scanned   prometheus.Counter       // addresses of finished tcp_scan probes
	ingested  *prometheus.CounterVec   // CIs by outcome, from the CMDB's receipts
	payloads  prometheus.Counter
	alerts    prometheus.Counter
	undecoded *prometheus.CounterVec // messages the observer could not read, by subject kind

	// seen drops a message published twice (a bridge resending a result whose ack was lost,
	// which JetStream deduplicates but a plain subscription sees again)
	seen *recent

	// totals for Rates, with samples of them taken by Run
	nProbes, nScanned, nIngested, nAlerts atomic.Int64
	mu                                    sync.Mutex
	samples                               []sample

	descStreamMsgs, descStreamBytes, descPending, descAckPending, descRedelivered, descDLQ *prometheus.Desc
	descOutboxBytes, descOutboxMsgs, descOutboxAge, descBridgeProbes, descBeatAge          *prometheus.Desc
	descBridgeResults                                                                      *prometheus.Desc
	descScrapeErrors                                                                       *prometheus.Desc
}

type sample struct {
	at                                    time.Time
	probes, scanned, ingested, alertsSeen int64
}

// latencyBuckets span a local probe (milliseconds) to a result held in an outbox through a
// WAN cut (many minutes).
var latencyBuckets = []float64{0.005, 0.02, 0.1, 0.5, 1, 2.5, 5, 15, 60, 300, 1800}

// NewHub registers the hub's series on reg; Run feeds them.
func NewHub(reg prometheus.Registerer, cfg HubConfig) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.QueryTimeout == 0 {
		cfg.QueryTimeout = 3 * time.Second
	}
	if cfg.AlertsBucket == "" {
		cfg.AlertsBucket = "correlation_alerts"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := func(name string) string { return prometheus.BuildFQName(Namespace, "", name) }
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(n(name), help, labels, nil)
	}
	h := &Hub{cfg: cfg, log: log.With("component", "metrics"), seen: newRecent(1 << 15),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: n("probes_total"),
			Help: "Probes finished (final results seen on the bus), by kind and status."}, []string{"kind", "status"}),
		chunks: prometheus.NewCounter(prometheus.CounterOpts{Name: n("results_total"),
			Help: "Result messages seen on the bus, chunks of streamed results included."}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: n("probe_duration_seconds"),
			Help: "Probe execution time at the bridge (finished - started), by kind.", Buckets: latencyBuckets}, []string{"kind"}),
		delay: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: n("result_delay_seconds"),
			Help: "Time from a probe's end at the bridge to its result at the hub (outbox, WAN), by kind; clock skew below 0 counts as 0.", Buckets: latencyBuckets}, []string{"kind"}),
		scanned: prometheus.NewCounter(prometheus.CounterOpts{Name: n("scan_addresses_total"),
			Help: "Addresses scanned by finished tcp_scan probes."}),
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{Name: n("cmdb_ingested_cis_total"),
			Help: "CIs ingested by the CMDB (from its receipts), by outcome."}, []string{"outcome"}),
		payloads: prometheus.NewCounter(prometheus.CounterOpts{Name: n("cmdb_ingested_payloads_total"),
			Help: "Payloads ingested by the CMDB (receipts)."}),
		alerts: prometheus.NewCounter(prometheus.CounterOpts{Name: n("alert_writes_total"),
			Help: "Alerts opened or changed by correlation (writes of its alert bucket)."}),
		undecoded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: n("metrics_undecoded_total"),
			Help: "Messages the metrics observer could not read (they are not counted elsewhere), by what they were."}, []string{"what"}),

		descStreamMsgs:   d("stream_messages", "Messages in a stream.", "stream"),
		descStreamBytes:  d("stream_bytes", "Bytes in a stream.", "stream"),
		descPending:      d("consumer_pending_messages", "Messages of a durable consumer not delivered yet (its lag).", "stream", "consumer"),
		descAckPending:   d("consumer_ack_pending_messages", "Messages of a durable consumer delivered and not acknowledged yet.", "stream", "consumer"),
		descRedelivered:  d("consumer_redelivered_messages", "Messages of a durable consumer delivered more than once and not acknowledged yet.", "stream", "consumer"),
		descDLQ:          d("dlq_messages", "Messages in the dead-letter stream."),
		descOutboxBytes:  d("bridge_outbox_bytes", "Bytes in a bridge's outbox (last heartbeat).", "site", "agent"),
		descOutboxMsgs:   d("bridge_outbox_messages", "Results in a bridge's outbox (last heartbeat).", "site", "agent"),
		descOutboxAge:    d("bridge_outbox_age_seconds", "Age of the oldest result in a bridge's outbox (last heartbeat).", "site", "agent"),
		descBridgeProbes: d("bridge_probes_done_total", "Probes a bridge executed since it started (last heartbeat).", "site", "agent"),
		descBridgeResults: d("bridge_results_total", "Results a bridge sent since it started (last heartbeat), by path: direct (acked by the hub on a direct send) or outbox (stored, then forwarded).",
			"site", "agent", "path"),
		descBeatAge:      d("bridge_heartbeat_age_seconds", "Seconds since a bridge's last heartbeat reached the hub.", "site", "agent"),
		descScrapeErrors: d("metrics_query_errors", "Bus queries of this scrape that failed (their series are missing).", "what"),
	}
	for _, c := range []prometheus.Collector{h.probes, h.chunks, h.duration, h.delay, h.scanned, h.ingested, h.payloads, h.alerts, h.undecoded, h} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	h.sample()
	return h, nil
}

// Run observes the bus until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	subs := []struct {
		subject string
		handle  func(*nats.Msg)
	}{
		{"result.>", h.onResult},
		{bus.IngestedSubject(">"), h.onReceipt},
		{"$KV." + h.cfg.AlertsBucket + ".a.>", func(*nats.Msg) { h.alerts.Inc(); h.nAlerts.Add(1) }},
	}
	for _, s := range subs {
		sub, err := h.cfg.NC.Subscribe(s.subject, s.handle)
		if err != nil {
			return fmt.Errorf("metrics: subscribe %s: %w", s.subject, err)
		}
		// a burst of results must not make the client drop them: counted, not lost silently
		_ = sub.SetPendingLimits(1<<20, 1<<30)
		defer func() { _ = sub.Unsubscribe() }()
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			h.sample()
		}
	}
}

// resultHead is what the observer reads of a result; Data stays raw (not decoded) except
// for a scan's summary.
type resultHead struct {
	Kind     string          `json:"kind"`
	Status   string          `json:"status"`
	Final    bool            `json:"final"`
	Started  time.Time       `json:"started"`
	Finished time.Time       `json:"finished"`
	Data     json.RawMessage `json:"data"`
}

func (h *Hub) onResult(m *nats.Msg) {
	if !h.seen.add(m.Header.Get(jetstream.MsgIDHeader)) {
		return
	}
	h.chunks.Inc()
	r, err := readResultHead(m.Data)
	if err != nil || r.Kind == "" {
		h.undecoded.WithLabelValues("result").Inc()
		return
	}
	if !r.Final {
		return
	}
	h.probes.WithLabelValues(r.Kind, r.Status).Inc()
	h.nProbes.Add(1)
	if !r.Started.IsZero() && !r.Finished.IsZero() {
		h.duration.WithLabelValues(r.Kind).Observe(max(0, r.Finished.Sub(r.Started).Seconds()))
		h.delay.WithLabelValues(r.Kind).Observe(max(0, h.cfg.Now().Sub(r.Finished).Seconds()))
	}
	if r.Kind == "tcp_scan" && len(r.Data) > 0 {
		var sum struct {
			Addresses int `json:"addresses"`
		}
		if json.Unmarshal(r.Data, &sum) == nil && sum.Addresses > 0 {
			h.scanned.Add(float64(sum.Addresses))
			h.nScanned.Add(int64(sum.Addresses))
		}
	}
}

// receiptCounts is what the observer reads of a receipt (envelope.Ingested): its counts, not
// its refs — an import's receipt names 256 rows, and a map of them per receipt cost the hub
// about 1.5 µs per imported row.
type receiptCounts struct {
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
	Conflicts int `json:"conflicts"`
	Skipped   int `json:"skipped"`
}

func (h *Hub) onReceipt(m *nats.Msg) {
	if !h.seen.add(m.Header.Get(jetstream.MsgIDHeader)) {
		return
	}
	var in receiptCounts
	if err := json.Unmarshal(m.Data, &in); err != nil {
		h.undecoded.WithLabelValues("receipt").Inc()
		return
	}
	h.payloads.Inc()
	for outcome, n := range map[string]int{"created": in.Created, "updated": in.Updated, "unchanged": in.Unchanged, "conflict": in.Conflicts, "skipped": in.Skipped} {
		if n > 0 {
			h.ingested.WithLabelValues(outcome).Add(float64(n))
		}
	}
	h.nIngested.Add(int64(in.Created + in.Updated + in.Unchanged))
}

// Rates are per-second rates over about the last minute, for `outpost status`.
type Rates struct {
	Window       time.Duration
	Probes       float64 // probes finished
	ScanAddrs    float64 // addresses scanned
	CMDBIngested float64 // CIs ingested
	AlertWrites  float64 // alerts opened or changed
}

const rateWindow = time.Minute

func (h *Hub) sample() {
	s := sample{at: h.cfg.Now(), probes: h.nProbes.Load(), scanned: h.nScanned.Load(), ingested: h.nIngested.Load(), alertsSeen: h.nAlerts.Load()}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples = append(h.samples, s)
	// keep one sample older than the window, so the rate spans a full minute
	for len(h.samples) > 2 && s.at.Sub(h.samples[1].at) >= rateWindow {
		h.samples = h.samples[1:]
	}
}

// Rates compares the totals now with the oldest sample (at most about a minute old).
func (h *Hub) Rates() Rates {
	now := h.cfg.Now()
	h.mu.Lock()
	old := h.samples[0]
	h.mu.Unlock()
	dt := now.Sub(old.at)
	if dt <= 0 {
		return Rates{}
	}
	per := func(now, then int64) float64 { return float64(now-then) / dt.Seconds() }
	return Rates{Window: dt, Probes: per(h.nProbes.Load(), old.probes), ScanAddrs: per(h.nScanned.Load(), old.scanned),
		CMDBIngested: per(h.nIngested.Load(), old.ingested), AlertWrites: per(h.nAlerts.Load(), old.alertsSeen)}
}

// Describe sends the descriptors of the series read at scrape time.
func (h *Hub) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{h.descStreamMsgs, h.descStreamBytes, h.descPending, h.descAckPending, h.descRedelivered, h.descDLQ,
		h.descOutboxBytes, h.descOutboxMsgs, h.descOutboxAge, h.descBridgeProbes, h.descBeatAge, h.descScrapeErrors, h.descBridgeResults} {
		ch <- d
	}
}

// Collect reads streams, consumers and heartbeats from the bus.
func (h *Hub) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.QueryTimeout)
	defer cancel()
	failed := map[string]float64{"streams": 0, "heartbeats": 0}
	if err := h.collectStreams(ctx, ch); err != nil {
		failed["streams"]++
		h.log.Warn("metrics: streams not read", "err", err)
	}
	if err := h.collectBeats(ctx, ch); err != nil {
		failed["heartbeats"]++
		h.log.Warn("metrics: heartbeats not read", "err", err)
	}
	for what, n := range failed {
		ch <- prometheus.MustNewConstMetric(h.descScrapeErrors, prometheus.GaugeValue, n, what)
	}
}

func (h *Hub) collectStreams(ctx context.Context, ch chan<- prometheus.Metric) error {
	names := h.cfg.JS.StreamNames(ctx)
	var errs []error
	for name := range names.Name() {
		st, err := h.cfg.JS.Stream(ctx, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", name, err))
			continue
		}
		if strings.HasPrefix(name, "KV_") || strings.HasPrefix(name, "OBJ_") {
			continue // buckets are not queues: no lag to watch
		}
		info := st.CachedInfo()
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
		}
		gauge(h.descStreamMsgs, float64(info.State.Msgs), name)
		gauge(h.descStreamBytes, float64(info.State.Bytes), name)
		if name == bus.StreamDLQ {
			gauge(h.descDLQ, float64(info.State.Msgs))
		}
		cons := st.ListConsumers(ctx)
		for ci := range cons.Info() {
			if ci.Config.Durable == "" {
				continue // ephemeral readers (replays, the console's browsing) are not lag
			}
			gauge(h.descPending, float64(ci.NumPending), name, ci.Name)
			gauge(h.descAckPending, float64(ci.NumAckPending), name, ci.Name)
			gauge(h.descRedelivered, float64(ci.NumRedelivered), name, ci.Name)
		}
		if err := cons.Err(); err != nil {
			errs = append(errs, fmt.Errorf("consumers of %s: %w", name, err))
		}
	}
	if err := names.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (h *Hub) collectBeats(ctx context.Context, ch chan<- prometheus.Metric) error {
	kv, err := h.cfg.JS.KeyValue(ctx, bus.KVHeartbeats)
	if err != nil {
		return err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return err
	}
	now := h.cfg.Now()
	for key := range keys.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue // expired between the listing and the read
		}
		var b struct {
			envelope.Heartbeat
			Received time.Time `json:"received"`
		}
		if err := json.Unmarshal(e.Value(), &b); err != nil || b.Agent == "" {
			h.undecoded.WithLabelValues("heartbeat").Inc()
			continue
		}
		site, agent := b.Site, b.Agent
		if site == "" {
			site, _, _ = strings.Cut(key, ".")
		}
		g := func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
			ch <- prometheus.MustNewConstMetric(d, t, v, site, agent)
		}
		g(h.descOutboxBytes, prometheus.GaugeValue, float64(b.OutboxBytes))
		g(h.descOutboxMsgs, prometheus.GaugeValue, float64(b.OutboxMessages))
		g(h.descOutboxAge, prometheus.GaugeValue, b.OutboxAge)
		g(h.descBridgeProbes, prometheus.CounterValue, float64(b.ProbesDone))
		for path, n := range map[string]int64{"direct": b.ResultsDirect, "outbox": b.ResultsStored} {
			ch <- prometheus.MustNewConstMetric(h.descBridgeResults, prometheus.CounterValue, float64(n), site, agent, path)
		}
		if !b.Received.IsZero() {
			g(h.descBeatAge, prometheus.GaugeValue, max(0, now.Sub(b.Received).Seconds()))
		}
	}
	return nil
}

// recent remembers the last n message ids (a ring), to count each message once.
type recent struct {
	mu   sync.Mutex
	ids  map[string]struct{}
	ring []string
	next int
}

func newRecent(n int) *recent {
	return &recent{ids: make(map[string]struct{}, n), ring: make([]string, n)}
}

// add reports whether id is new (an empty id always is: nothing to tell copies apart by).
func (r *recent) add(id string) bool {
	if id == "" {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.ids[id]; dup {
		return false
	}
	delete(r.ids, r.ring[r.next])
	r.ring[r.next] = id
	r.ids[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
	return true
}
