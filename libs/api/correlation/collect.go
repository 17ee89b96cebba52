package correlation

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/page"
)

// Collection by the hub through a site's bridges: metric definitions (samples on METRICS,
// per-series baselines, anomaly events) and pull connectors (other tools' event APIs mapped
// into events). Both are data, stored by the service and run as scheduled probes of the
// existing kinds (http_request, snmp_get, ssh_exec), so a bridge gains no listener and no
// subject: it runs probes of the lane "correlation" and sends results as for any probe.
var (
	MetricAdd    = bus.Op[MetricDef, MetricDef]{Service: Service, Name: "metrics_add"}
	MetricList   = bus.Op[page.Request, MetricDefsResponse]{Service: Service, Name: "metrics_ls"}
	MetricRemove = bus.Op[NameRequest, MetricDef]{Service: Service, Name: "metrics_rm"}
	// SeriesList lists every series (definition × target) with its baseline and last sample.
	SeriesList      = bus.Op[SeriesListRequest, SeriesListResponse]{Service: Service, Name: "series_ls"}
	ConnectorAdd    = bus.Op[Connector, Connector]{Service: Service, Name: "connectors_add"}
	ConnectorList   = bus.Op[page.Request, ConnectorsResponse]{Service: Service, Name: "connectors_ls"}
	ConnectorRemove = bus.Op[NameRequest, Connector]{Service: Service, Name: "connectors_rm"}
)

// collectOps are the collection ops, listed by Ops.
func collectOps() []bus.OpSpec {
	return []bus.OpSpec{MetricAdd.Spec(), MetricList.Spec(), MetricRemove.Spec(), SeriesList.Spec(),
		ConnectorAdd.Spec(), ConnectorList.Spec(), ConnectorRemove.Spec()}
}

// Probe kinds a metric may be collected with, and what its Value names in each.
const (
	KindHTTP = "http_request" // Value: a path into the JSON body ("cpu.load", "$.disks[0].free")
	KindSNMP = "snmp_get"     // Value: the OID whose value is the sample
	KindSSH  = "ssh_exec"     // Value: a regexp whose first group is the number (default: the whole stdout)
)

// MetricKinds are the kinds a metric definition may use.
var MetricKinds = []string{KindHTTP, KindSNMP, KindSSH}

// SourceMetrics is the source of anomaly events (event.hub.metrics).
const SourceMetrics = "metrics"

// EventTypeAnomaly is the type of an anomaly event; its additional fields carry the score.
const EventTypeAnomaly = "anomaly"

// ConnectorSourcePrefix + a connector's name is the source of its events
// (event.hub.connector-<name>), so two tools' events never share a dedup key.
const ConnectorSourcePrefix = "connector-"

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// MetricDef is one metric collection: every Interval, one probe of Kind per target on Site;
// each target is one series (metric = Name, node = the target).
type MetricDef struct {
	Name     string   `json:"name" doc:"lower-case letters, digits, - and _"`
	Site     string   `json:"site"`
	Kind     string   `json:"kind" enum:"http_request,snmp_get,ssh_exec"`
	Targets  []string `json:"targets" doc:"addresses or host names on the site; each is a series"`
	Interval string   `json:"interval" format:"duration" doc:"how often (at least 1s)"`
	// Params are the kind's params (libs/probes/<kind>): the URL path, OIDs, commands.
	Params json.RawMessage `json:"params,omitempty"`
	// Credential names a stored credential (outpost credentials), sealed to the site's
	// bridges for each probe; never the secret itself.
	Credential string `json:"credential,omitempty"`
	Value      string `json:"value,omitempty" doc:"http_request: JSON path; snmp_get: OID; ssh_exec: regexp with one group"`
	// Counter: the value only grows (SNMP ifInOctets…); the sample is its rate per second.
	Counter  bool      `json:"counter,omitempty"`
	Resource string    `json:"resource,omitempty" doc:"the anomaly events' resource"`
	Baseline Baseline  `json:"baseline,omitzero"`
	Created  time.Time `json:"created,omitzero"`
}

// Baseline tunes a series' baseline; zero values take the defaults.
type Baseline struct {
	// Alpha is the EWMA's weight of a new sample (default 0.1); the first 1/Alpha samples
	// are averaged plainly so a young series is not dominated by its first value.
	Alpha float64 `json:"alpha,omitempty" doc:"EWMA weight of a new sample, 0..1 (default 0.1)"`
	// Threshold is the score (deviations from the expected value, in standard deviations)
	// at or above which a sample is an anomaly (default 4).
	Threshold float64 `json:"threshold,omitempty" doc:"anomaly score threshold (default 4)"`
	// MinSamples: no anomaly before the EWMA has seen this many samples (default 10), nor is
	// an hour-of-week band used before it has (its own count).
	MinSamples int `json:"min_samples,omitempty" doc:"samples before a baseline is trusted (default 10)"`
	// Severity of an anomaly event (default major).
	Severity string `json:"severity,omitempty"`
}

// Defaults fills the zero values.
func (b Baseline) Defaults() Baseline {
	if b.Alpha == 0 {
		b.Alpha = 0.1
	}
	if b.Threshold == 0 {
		b.Threshold = 4
	}
	if b.MinSamples == 0 {
		b.MinSamples = 10
	}
	if b.Severity == "" {
		b.Severity = SeverityMajor
	}
	return b
}

// Validate reports every problem at once.
func (d MetricDef) Validate() error {
	var errs []error
	if !nameRE.MatchString(d.Name) {
		errs = append(errs, fmt.Errorf("name %q: want lower-case letters, digits, - and _ (at most 63)", d.Name))
	}
	if !bus.ValidName(d.Site) {
		errs = append(errs, fmt.Errorf("site %q: want a site name", d.Site))
	}
	if !slices.Contains(MetricKinds, d.Kind) {
		errs = append(errs, fmt.Errorf("kind %q: want one of %s", d.Kind, strings.Join(MetricKinds, ", ")))
	}
	if len(d.Targets) == 0 {
		errs = append(errs, errors.New("targets: want at least one address or host name"))
	}
	for _, t := range d.Targets {
		if t == "" || strings.ContainsAny(t, " \t/") {
			errs = append(errs, fmt.Errorf("target %q: want an address or host name", t))
		}
	}
	if iv, err := time.ParseDuration(d.Interval); err != nil || iv < time.Second {
		errs = append(errs, fmt.Errorf("interval %q: want a duration of at least 1s (30s, 5m)", d.Interval))
	}
	switch d.Kind {
	case KindSNMP:
		if d.Value == "" {
			errs = append(errs, errors.New("value: snmp_get needs the OID whose value is the sample"))
		}
	case KindHTTP:
		if _, err := ParsePath(d.Value); err != nil {
			errs = append(errs, fmt.Errorf("value: %w", err))
		}
		errs = append(errs, checkHTTPParams(d.Params)...)
	case KindSSH:
		if d.Value != "" {
			if re, err := regexp.Compile(d.Value); err != nil || re.NumSubexp() < 1 {
				errs = append(errs, fmt.Errorf("value %q: want a regexp with one group around the number", d.Value))
			}
		}
	}
	if len(d.Params) > 0 && !json.Valid(d.Params) {
		errs = append(errs, errors.New("params: not JSON"))
	}
	b := d.Baseline.Defaults()
	if b.Alpha <= 0 || b.Alpha > 1 {
		errs = append(errs, fmt.Errorf("baseline.alpha %g: want 0 < alpha <= 1", b.Alpha))
	}
	if b.Threshold <= 0 {
		errs = append(errs, fmt.Errorf("baseline.threshold %g: want above 0", b.Threshold))
	}
	if b.MinSamples < 2 {
		errs = append(errs, fmt.Errorf("baseline.min_samples %d: want at least 2", b.MinSamples))
	}
	if r := Rank(b.Severity); r <= 0 {
		errs = append(errs, fmt.Errorf("baseline.severity %q: want one of critical, major, minor, warning, info", b.Severity))
	}
	return errors.Join(errs...)
}

// NameRequest names a definition.
type NameRequest struct {
	Name string `json:"name"`
}

// MetricDefsResponse is a page of metric definitions.
type MetricDefsResponse struct {
	Items      []MetricDef `json:"items"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// SeriesListRequest filters series by definition.
type SeriesListRequest struct {
	Metric string `json:"metric,omitempty"`
	page.Request
}

// Series is one series' state: its baseline and what its last collection gave.
type Series struct {
	Key    string `json:"key"`
	Metric string `json:"metric"`
	Site   string `json:"site"`
	Target string `json:"target"`
	// Samples taken into the baseline; Mean/StdDev its EWMA.
	Samples int64   `json:"samples"`
	Mean    float64 `json:"mean"`
	StdDev  float64 `json:"stddev"`
	// Band is the hour-of-week band of the last sample's hour (nil until it has samples).
	Band *Band `json:"band,omitempty"`
	// Last sample: its value (the rate for a counter), time and score.
	LastValue float64   `json:"last_value"`
	LastTime  time.Time `json:"last_time,omitzero"`
	LastScore float64   `json:"last_score"`
	// Anomalous: the last sample raised an anomaly not yet cleared.
	Anomalous bool `json:"anomalous"`
	// LastError is the last failed collection (probe error, no value), with its time.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	Errors        int64     `json:"errors"`
}

// Band is an hour-of-week band: the mean and spread of a series' samples in one hour of
// the week (0 = Monday 00:00–01:00 UTC).
type Band struct {
	Hour    int     `json:"hour"`
	Samples int64   `json:"samples"`
	Mean    float64 `json:"mean"`
	StdDev  float64 `json:"stddev"`
}

// SeriesListResponse is a page of series.
type SeriesListResponse struct {
	Items      []Series `json:"items"`
	NextCursor string   `json:"next_cursor,omitempty"`
}

// Connector polls another tool's API through a site's bridge every Interval and maps each
// record of its JSON answer to an event.
type Connector struct {
	Name     string `json:"name"`
	Site     string `json:"site"`
	URL      string `json:"url" doc:"http(s) URL on the site (its host must be in the site's ranges)"`
	Interval string `json:"interval" format:"duration"`
	// Credential names a stored http credential (its Authorization goes with the request).
	Credential string            `json:"credential,omitempty"`
	Headers    map[string]string `json:"headers,omitempty" doc:"request headers (no Authorization: use a credential)"`
	// Records is the path to the array of records in the answer (empty: the answer is it).
	Records string `json:"records,omitempty"`
	// Fields maps event fields (node, type, resource, metric, severity, message,
	// message_key, time, id) to paths in a record; node or message_key is required.
	Fields map[string]string `json:"fields"`
	// Additional maps additional keys to paths in a record.
	Additional map[string]string `json:"additional,omitempty"`
	// Severities maps the tool's severity values to ours (e.g. "5": critical, "ok": clear).
	Severities map[string]string `json:"severities,omitempty"`
	// Type of the events when no field gives one (default: the connector's name).
	Type string `json:"type,omitempty"`
	// SinceParam, when set, is a query parameter given the newest record time already taken
	// (RFC 3339), for APIs that can answer only what is newer.
	SinceParam string    `json:"since_param,omitempty"`
	Created    time.Time `json:"created,omitzero"`
	// State, read-only: what the last polls gave.
	State *ConnectorState `json:"state,omitempty"`
}

// ConnectorState is what a connector's polls gave.
type ConnectorState struct {
	Polls int64 `json:"polls"`
	// Events published; Skipped records already taken by an earlier poll; Rejected records
	// that could not be mapped (each dead-lettered with its reason).
	Events   int64     `json:"events"`
	Skipped  int64     `json:"skipped"`
	Rejected int64     `json:"rejected"`
	LastPoll time.Time `json:"last_poll,omitzero"`
	// Watermark is the newest record time taken; IDs the records taken at that time.
	Watermark time.Time `json:"watermark,omitzero"`
	IDs       []string  `json:"ids,omitempty"`
	LastError string    `json:"last_error,omitempty"`
}

// ConnectorFields are the event fields a connector may map.
var ConnectorFields = []string{"node", "type", "resource", "metric", "severity", "message", "message_key", "time", "id"}

// Validate reports every problem at once.
func (c Connector) Validate() error {
	var errs []error
	if !nameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("name %q: want lower-case letters, digits, - and _ (at most 63)", c.Name))
	}
	if !bus.ValidName(c.Site) {
		errs = append(errs, fmt.Errorf("site %q: want a site name", c.Site))
	}
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		errs = append(errs, fmt.Errorf("url %q: want an http:// or https:// URL", c.URL))
	}
	if iv, err := time.ParseDuration(c.Interval); err != nil || iv < time.Second {
		errs = append(errs, fmt.Errorf("interval %q: want a duration of at least 1s (30s, 5m)", c.Interval))
	}
	errs = append(errs, checkHeaders("headers", c.Headers)...)
	errs = append(errs, checkURL("url", c.URL)...)
	if _, err := ParsePath(c.Records); err != nil {
		errs = append(errs, fmt.Errorf("records: %w", err))
	}
	if c.Fields["node"] == "" && c.Fields["message_key"] == "" {
		errs = append(errs, errors.New("fields: map node or message_key (an alert needs something to be about)"))
	}
	for k, p := range c.Fields {
		if !slices.Contains(ConnectorFields, k) {
			errs = append(errs, fmt.Errorf("fields.%s: unknown event field (want %s; others go in additional)", k, strings.Join(ConnectorFields, ", ")))
		}
		if _, err := ParsePath(p); err != nil || p == "" {
			errs = append(errs, fmt.Errorf("fields.%s: path %q: want a path in the record", k, p))
		}
	}
	for k, p := range c.Additional {
		if _, err := ParsePath(p); err != nil || p == "" || k == "" {
			errs = append(errs, fmt.Errorf("additional.%s: path %q: want a path in the record", k, p))
		}
	}
	for from, to := range c.Severities {
		if Rank(to) < 0 {
			errs = append(errs, fmt.Errorf("severities.%s: %q: want one of %s", from, to, strings.Join(Severities, ", ")))
		}
	}
	return errors.Join(errs...)
}

// ConnectorsResponse is a page of connectors.
type ConnectorsResponse struct {
	Items      []Connector `json:"items"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// ParsePath parses a JSON path of the simple kind tools document: "a.b[2].c", "$.a.b",
// "/a/b/2" (a JSON pointer) — object keys and array indexes, nothing else. Empty is the
// document itself.
func ParsePath(p string) ([]string, error) {
	p = strings.TrimSpace(p)
	if p == "" || p == "$" {
		return nil, nil
	}
	if strings.HasPrefix(p, "/") {
		parts := strings.Split(p[1:], "/")
		for i, s := range parts {
			parts[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
		}
		return parts, nil
	}
	p = strings.TrimPrefix(strings.TrimPrefix(p, "$"), ".")
	var out []string
	for _, seg := range strings.Split(p, ".") {
		name, rest, _ := strings.Cut(seg, "[")
		if name != "" {
			out = append(out, name)
		}
		for rest != "" {
			idx, after, ok := strings.Cut(rest, "]")
			if !ok || idx == "" || strings.Trim(idx, "0123456789") != "" {
				return nil, fmt.Errorf("path %q: want key.key[index]…", p)
			}
			out = append(out, idx)
			rest = strings.TrimPrefix(after, "[")
			if after != "" && !strings.HasPrefix(after, "[") {
				return nil, fmt.Errorf("path %q: want key.key[index]…", p)
			}
		}
		if name == "" && !strings.Contains(seg, "[") {
			return nil, fmt.Errorf("path %q: empty key", p)
		}
	}
	return out, nil
}

// Lookup follows a parsed path in a decoded JSON document.
func Lookup(doc any, path []string) (any, bool) {
	cur := doc
	for _, k := range path {
		switch v := cur.(type) {
		case map[string]any:
			n, ok := v[k]
			if !ok {
				return nil, false
			}
			cur = n
		case []any:
			var i int
			if _, err := fmt.Sscanf(k, "%d", &i); err != nil || i < 0 || i >= len(v) {
				return nil, false
			}
			cur = v[i]
		default:
			return nil, false
		}
	}
	return cur, true
}
