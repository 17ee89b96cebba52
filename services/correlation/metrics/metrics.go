// Package metrics is the correlation service's metric collection and anomaly detection:
// metric definitions (data: name, site, kind, targets, interval, where the value is) are
// collected as scheduled probes through the site's bridges (package poll); each value is a
// sample on the METRICS stream (metric.<site>.<metric>); every sample updates its series'
// baseline in KV (an EWMA and hour-of-week bands, baseline.go) and a sample far from it
// raises an anomaly event — type anomaly, score in additional, node the target so the
// pipeline binds it to the CI — published on event.hub.metrics like any other event, so it
// becomes an alert; the next normal sample clears it.
package metrics

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/libs/probes/httprequest"
	"github.com/outpost-dev/outpost/libs/probes/snmpget"
	"github.com/outpost-dev/outpost/libs/probes/sshexec"
	"github.com/outpost-dev/outpost/services/correlation/defs"
	"github.com/outpost-dev/outpost/services/correlation/poll"
)

// Names of what the package keeps.
const (
	// Stream holds the samples, metric.<site>.<metric>: kept for replay and for anyone who
	// wants the values (a Prometheus bridge, a chart), not only the baselines.
	Stream          = "METRICS"
	SamplesConsumer = "correlation_samples"
	KVDefs          = "correlation_metric_defs"
	KVSeries        = "correlation_series"
	// Owner names the package's jobs in the poller.
	Owner = "metrics"
)

// Subject of a series' samples.
func Subject(site, metric string) string { return "metric." + site + "." + metric }

// Config of metric collection.
type Config struct {
	MaxAge   time.Duration // METRICS retention (default 7 days)
	MaxBytes int64         // METRICS size cap (default 512 MiB; oldest evicted first)
	Replicas int           // stream replicas (default 1)
}

// DefaultConfig is what `outpost up` runs.
func DefaultConfig() Config {
	return Config{MaxAge: 7 * 24 * time.Hour, MaxBytes: 512 << 20, Replicas: 1}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.MaxAge <= 0 {
		errs = append(errs, fmt.Errorf("metrics: MaxAge %s: want above 0", c.MaxAge))
	}
	if c.MaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("metrics: MaxBytes %d: want at least 1 MiB", c.MaxBytes))
	}
	if c.Replicas < 1 {
		errs = append(errs, fmt.Errorf("metrics: Replicas %d: want at least 1", c.Replicas))
	}
	return errors.Join(errs...)
}

// Deps are what the package is given.
type Deps struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Logger *slog.Logger
	Tracer trace.TracerProvider
	Clock  clock.Clock
	Pub    *bus.Publisher
}

// Metrics collects samples and keeps baselines.
type Metrics struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	clock    clock.Clock
	kvDefs   jetstream.KeyValue
	kvSeries jetstream.KeyValue

	defs *defs.Store[api.MetricDef]

	// Counters: nothing skipped without one.
	Samples, Anomalies, Clears, Old, Failures atomic.Int64
}

// New creates the stream, the samples consumer and the buckets when missing.
func New(ctx context.Context, cfg Config, deps Deps) (*Metrics, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sc := bus.Stream(Stream) // the stores table (libs/bus/stores.go), with this service's limits
	sc.MaxAge, sc.MaxBytes, sc.Replicas = cfg.MaxAge, cfg.MaxBytes, cfg.Replicas
	if _, err := deps.JS.CreateOrUpdateStream(ctx, sc); err != nil {
		return nil, fmt.Errorf("metrics: stream %s: %w", Stream, err)
	}
	if _, err := deps.JS.CreateOrUpdateConsumer(ctx, Stream, samplesSpec().Config()); err != nil {
		return nil, fmt.Errorf("metrics: consumer %s: %w", SamplesConsumer, err)
	}
	kvD, err := deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVDefs))
	if err != nil {
		return nil, fmt.Errorf("metrics: bucket %s: %w", KVDefs, err)
	}
	kvS, err := deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVSeries))
	if err != nil {
		return nil, fmt.Errorf("metrics: bucket %s: %w", KVSeries, err)
	}
	log = log.With("stage", "metrics")
	return &Metrics{cfg: cfg, deps: deps, log: log, clock: clock.Or(deps.Clock), kvDefs: kvD, kvSeries: kvS,
		defs: defs.New(kvD, "metric", "outpost metrics ls", func(d api.MetricDef) string { return d.Name }, log)}, nil
}

func samplesSpec() bus.ConsumerSpec {
	return bus.ConsumerSpec{Stream: Stream, Name: SamplesConsumer, Filters: []string{"metric.>"}, AckWait: 30 * time.Second,
		MaxDeliver: 5, MaxAckPending: 1000, Description: "correlation: samples into baselines and anomaly events"}
}

// Run keeps the definitions in memory and turns samples into baselines until ctx ends.
func (m *Metrics) Run(ctx context.Context) error {
	if err := m.defs.Watch(ctx); err != nil {
		return err
	}
	r, err := bus.NewRouter(m.deps.NC, m.deps.JS, bus.RouterConfig{Service: api.Service, Topology: bus.Topology{Consumers: []bus.ConsumerSpec{samplesSpec()}},
		Logger: m.log, Tracer: m.deps.Tracer})
	if err != nil {
		return err
	}
	if err := r.Handle("metric-samples", SamplesConsumer, bus.Decoded(m.sample)); err != nil {
		return err
	}
	return r.Run(ctx)
}

// Jobs are one per definition and target.
func (m *Metrics) Jobs() []poll.Job {
	var out []poll.Job
	m.defs.Each(func(d api.MetricDef) {
		iv, _ := time.ParseDuration(d.Interval)
		for _, t := range d.Targets {
			out = append(out, poll.Job{Name: d.Name, Site: d.Site, Kind: d.Kind, Target: t, Params: d.Params, Credential: d.Credential, Interval: iv})
		}
	})
	return out
}

func (m *Metrics) def(name string) (api.MetricDef, bool) { return m.defs.Get(name) }

// Result turns a probe's result into a sample on METRICS; a failed probe or a result
// without the value is the series' last error. The sample's message id is its series and
// slot, so a slot fired twice (a lease handover) or a redelivered result is one sample.
func (m *Metrics) Result(ctx context.Context, ref poll.Ref, r *envelope.Result) error {
	d, ok := m.def(ref.Name)
	if !ok {
		return nil // removed since the probe went out
	}
	v, err := Value(d, r)
	if err != nil {
		m.Failed(ctx, ref, err)
		return nil
	}
	s := &envelope.Sample{Site: d.Site, Metric: d.Name, Target: ref.Target, Value: v, Time: ref.Slot, Agent: r.Agent}
	id := "s" + SeriesKey(d.Site, d.Name, ref.Target)[2:] + "-" + strconv.FormatInt(ref.Slot.Unix(), 10)
	if _, err := m.deps.Pub.Publish(ctx, Subject(d.Site, d.Name), envelope.Meta{ID: id, Time: m.clock.Now().UTC()}, s); err != nil {
		return fmt.Errorf("publish sample of %s/%s: %w", d.Name, ref.Target, err)
	}
	return nil
}

// Failed records a collection failure on the series.
func (m *Metrics) Failed(ctx context.Context, ref poll.Ref, cause error) {
	m.Failures.Add(1)
	d, ok := m.def(ref.Name)
	if !ok {
		return
	}
	m.log.Warn("metric not collected", "metric", d.Name, "target", ref.Target, "err", cause)
	err := m.update(ctx, d, ref.Target, func(st *State) bool {
		st.Series.LastError, st.Series.LastErrorTime = cause.Error(), m.clock.Now().UTC()
		st.Series.Errors++
		return true
	})
	if err != nil {
		m.log.Warn("series error not recorded", "metric", d.Name, "target", ref.Target, "err", err)
	}
}

// Value reads a definition's number out of its probe's result.
func Value(d api.MetricDef, r *envelope.Result) (float64, error) {
	if err := poll.ProbeError(r); err != nil {
		return 0, err
	}
	switch d.Kind {
	case api.KindHTTP:
		var res httprequest.Result
		if err := json.Unmarshal(r.Data, &res); err != nil {
			return 0, fmt.Errorf("http_request result: %w", err)
		}
		if err := poll.HTTPStatusError(res.Status); err != nil {
			return 0, fmt.Errorf("%s: %w", res.URL, err)
		}
		body := []byte(res.Body.Text)
		if res.Body.Base64 != "" {
			b, err := base64.StdEncoding.DecodeString(res.Body.Base64)
			if err != nil {
				return 0, fmt.Errorf("%s: body: %w", res.URL, err)
			}
			body = b
		}
		if res.Body.Truncated {
			return 0, fmt.Errorf("%s: the body was cut at %d bytes: raise params.max_body", res.URL, len(body))
		}
		var doc any
		if err := json.Unmarshal(body, &doc); err != nil {
			return 0, fmt.Errorf("%s: the body is not JSON: %w", res.URL, err)
		}
		path, _ := api.ParsePath(d.Value)
		v, ok := api.Lookup(doc, path)
		if !ok {
			return 0, fmt.Errorf("%s: no %q in the body", res.URL, d.Value)
		}
		return number(v, d.Value)
	case api.KindSNMP:
		var res snmpget.Result
		if err := json.Unmarshal(r.Data, &res); err != nil {
			return 0, fmt.Errorf("snmp_get result: %w", err)
		}
		want := strings.TrimPrefix(d.Value, ".")
		for _, v := range res.Values {
			if strings.TrimPrefix(v.OID, ".") == want {
				return number(v.Value, v.OID)
			}
		}
		return 0, fmt.Errorf("snmp_get %s: no value for OID %s (add it to params.oids)", res.IP, d.Value)
	case api.KindSSH:
		var res sshexec.Result
		if err := json.Unmarshal(r.Data, &res); err != nil {
			return 0, fmt.Errorf("ssh_exec result: %w", err)
		}
		if len(res.Outputs) == 0 {
			return 0, errors.New("ssh_exec: no command output (params.commands: one command printing the number)")
		}
		o := res.Outputs[0]
		if o.ExitCode == nil || *o.ExitCode != 0 || o.Error != "" {
			return 0, fmt.Errorf("ssh_exec %q failed: exit %v %s %s", o.Command, o.ExitCode, o.Error, strings.TrimSpace(o.Stderr.Text))
		}
		text := strings.TrimSpace(o.Stdout.Text)
		if d.Value != "" {
			mm := regexp.MustCompile(d.Value).FindStringSubmatch(text)
			if mm == nil {
				return 0, fmt.Errorf("ssh_exec %q: %q does not match %s", o.Command, clip(text), d.Value)
			}
			text = mm[1]
		}
		return number(text, o.Command)
	}
	return 0, fmt.Errorf("kind %s: not a metric kind", d.Kind)
}

func number(v any, where string) (float64, error) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case bool:
		if x {
			f = 1
		}
	case string:
		p, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not a number", where, clip(x))
		}
		f = p
	default:
		return 0, fmt.Errorf("%s: %v is not a number", where, v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%s: %v is not a finite number", where, f)
	}
	return f, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// SeriesKey is a series' KV key: a fixed-length hash, so any target fits the key alphabet.
func SeriesKey(site, metric, target string) string {
	h := sha256.Sum256([]byte(site + "\x00" + metric + "\x00" + target))
	return "s." + hex.EncodeToString(h[:12])
}

// update reads a series, applies f and writes it back with compare-and-set, again on a
// conflict; f returning false writes nothing.
func (m *Metrics) update(ctx context.Context, d api.MetricDef, target string, f func(*State) bool) error {
	key := SeriesKey(d.Site, d.Name, target)
	for attempt := 0; ; attempt++ {
		st := &State{Series: api.Series{Key: key, Metric: d.Name, Site: d.Site, Target: target}}
		var rev uint64
		e, err := m.kvSeries.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(e.Value(), st); err != nil {
				return bus.Permanent(fmt.Errorf("series %s: stored state unreadable: %w", key, err))
			}
			rev = e.Revision()
		}
		if !f(st) {
			return nil
		}
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = m.kvSeries.Create(ctx, key, b)
		} else {
			_, err = m.kvSeries.Update(ctx, key, b, rev)
		}
		if err == nil || attempt >= 5 || !conflict(err) {
			return err
		}
	}
}

func conflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence)
}

// sample folds one sample into its series' baseline; an anomaly (or the end of one) is an
// event, published before the baseline is written: a crash in between republishes it under
// the same id (deduplicated by EVENTS within its window; the pipeline counts it once more
// beyond it — the price of at-least-once without a second store).
func (m *Metrics) sample(ctx context.Context, _ envelope.Meta, s *envelope.Sample) error {
	d, ok := m.def(s.Metric)
	if !ok || d.Site != s.Site {
		return nil // removed since: nothing to keep a baseline for
	}
	cfg := d.Baseline.Defaults()
	var out Outcome
	err := m.update(ctx, d, s.Target, func(st *State) bool {
		out = st.Observe(cfg, s.Value, s.Time, d.Counter)
		if out.Skipped == "old" {
			return false
		}
		if out.Anomaly || out.Cleared {
			if err := m.publish(ctx, d, cfg, st.Series.Key, s, out); err != nil {
				out.Skipped = "publish: " + err.Error()
				return false
			}
		}
		st.Series.LastError = ""
		return true
	})
	if err != nil {
		return err
	}
	switch {
	case out.Skipped == "old":
		m.Old.Add(1)
	case strings.HasPrefix(out.Skipped, "publish: "):
		return errors.New(out.Skipped) // retried: the baseline was not written
	default:
		m.Samples.Add(1)
		if out.Anomaly {
			m.Anomalies.Add(1)
		}
		if out.Cleared {
			m.Clears.Add(1)
		}
	}
	return nil
}

func (m *Metrics) publish(ctx context.Context, d api.MetricDef, cfg api.Baseline, key string, s *envelope.Sample, out Outcome) error {
	sev, msg := cfg.Severity, fmt.Sprintf("%s on %s: %s, expected %s..%s (score %.1f)", d.Name, s.Target,
		fmtNum(out.Value), fmtNum(out.Low), fmtNum(out.High), out.Score)
	if out.Cleared {
		sev, msg = api.SeverityClear, fmt.Sprintf("%s on %s back to normal: %s (score %.1f)", d.Name, s.Target, fmtNum(out.Value), out.Score)
	}
	h := sha256.Sum256([]byte(key + "\x00" + s.Time.UTC().Format(time.RFC3339Nano)))
	ev := &envelope.Event{ID: "anomaly-" + hex.EncodeToString(h[:12]), Site: d.Site, Source: api.SourceMetrics, Type: api.EventTypeAnomaly,
		Node: s.Target, Resource: d.Resource, Metric: d.Name, Severity: sev, Message: msg, Time: s.Time.UTC(),
		Fields: map[string]string{"score": strconv.FormatFloat(out.Score, 'f', 2, 64), "value": fmtNum(out.Value),
			"expected": fmtNum(out.Expected), "low": fmtNum(out.Low), "high": fmtNum(out.High),
			"band": strconv.FormatBool(out.Band), "series": key}}
	_, err := m.deps.Pub.Publish(ctx, bus.EventSubject(bus.OriginHub, api.SourceMetrics), envelope.Meta{ID: ev.ID, Time: m.clock.Now().UTC()}, ev)
	return err
}

func fmtNum(f float64) string { return strconv.FormatFloat(f, 'g', 6, 64) }

// Add stores a definition (a new version of its name).
func (m *Metrics) Add(ctx context.Context, d api.MetricDef) (api.MetricDef, error) {
	if err := d.Validate(); err != nil {
		return api.MetricDef{}, bus.Errorf(http.StatusBadRequest, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	d.Created = m.clock.Now().UTC()
	if err := m.defs.Put(ctx, d); err != nil {
		return api.MetricDef{}, err
	}
	return d, nil
}

// List pages the definitions by name.
func (m *Metrics) List(_ context.Context, r page.Request) (api.MetricDefsResponse, error) {
	out, next, err := m.defs.Page(r)
	if err != nil {
		return api.MetricDefsResponse{}, err
	}
	return api.MetricDefsResponse{Items: out, NextCursor: next}, nil
}

// Remove deletes a definition; its series stay until purged with the bucket's history.
func (m *Metrics) Remove(ctx context.Context, r api.NameRequest) (api.MetricDef, error) {
	return m.defs.Remove(ctx, r.Name)
}

// Series pages every series (of one metric when asked) by metric, site and target.
func (m *Metrics) Series(ctx context.Context, r api.SeriesListRequest) (api.SeriesListResponse, error) {
	keys, err := m.kvSeries.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return api.SeriesListResponse{Items: []api.Series{}}, nil
	}
	if err != nil {
		return api.SeriesListResponse{}, bus.Errorf(http.StatusServiceUnavailable, "read series, retry: %v", err)
	}
	var items []api.Series
	for k := range keys.Keys() {
		e, err := m.kvSeries.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		var st State
		if json.Unmarshal(e.Value(), &st) != nil || (r.Metric != "" && st.Series.Metric != r.Metric) {
			continue
		}
		items = append(items, st.View())
	}
	id := func(s api.Series) string { return s.Metric + "\x00" + s.Site + "\x00" + s.Target }
	sort.Slice(items, func(i, j int) bool { return id(items[i]) < id(items[j]) })
	out, next, err := page.Slice(items, r.Request, id, strings.Compare)
	if err != nil {
		return api.SeriesListResponse{}, err
	}
	return api.SeriesListResponse{Items: out, NextCursor: next}, nil
}
