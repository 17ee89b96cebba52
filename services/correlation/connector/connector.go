// Package connector is the correlation service's pull connectors: another tool's event API
// polled through a site's bridge every interval (an http_request probe, package poll), each
// record of its JSON answer mapped to an event by the connector's definition (data: URL,
// interval, where the records are, event field → path in a record, severities, a stored
// credential's name) and published on event.hub.connector-<name>, where it takes the way of
// every other event. Records an earlier poll took are skipped (a watermark on the mapped time
// and the ids taken at it); a record that cannot be mapped is counted and dead-lettered with
// its reason, and the others go on.
package connector

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
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/libs/probes/httprequest"
	"github.com/outpost-dev/outpost/services/correlation/defs"
	"github.com/outpost-dev/outpost/services/correlation/poll"
)

// Names of what the package keeps.
const (
	KVDefs  = "correlation_connectors"
	KVState = "correlation_connector_state"
	Owner   = "connector"
	// maxBody is what a poll's answer may be: a result must fit one chunk.
	maxBody = 768 << 10
)

// Deps are what the package is given.
type Deps struct {
	JS     jetstream.JetStream
	Logger *slog.Logger
	Clock  clock.Clock
	Pub    *bus.Publisher
}

// Connectors polls and maps.
type Connectors struct {
	deps    Deps
	log     *slog.Logger
	clock   clock.Clock
	kvDefs  jetstream.KeyValue
	kvState jetstream.KeyValue

	defs  *defs.Store[api.Connector]
	mu    sync.Mutex
	since map[string]time.Time // watermark per connector, for since_param

	// Counters: nothing skipped without one.
	Events, Skipped, Rejected atomic.Int64
}

// New creates the buckets when missing.
func New(ctx context.Context, deps Deps) (*Connectors, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kvD, err := deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVDefs))
	if err != nil {
		return nil, fmt.Errorf("connectors: bucket %s: %w", KVDefs, err)
	}
	kvS, err := deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVState))
	if err != nil {
		return nil, fmt.Errorf("connectors: bucket %s: %w", KVState, err)
	}
	log = log.With("stage", "connector")
	return &Connectors{deps: deps, log: log, clock: clock.Or(deps.Clock), kvDefs: kvD, kvState: kvS,
		defs:  defs.New(kvD, "connector", "outpost connectors ls", func(d api.Connector) string { return d.Name }, log),
		since: map[string]time.Time{}}, nil
}

// Run keeps the definitions in memory until ctx ends; it returns once the stored ones are read.
func (c *Connectors) Run(ctx context.Context) error { return c.defs.Watch(ctx) }

func (c *Connectors) def(name string) (api.Connector, bool) { return c.defs.Get(name) }

// Jobs is one per connector: an http_request of its URL (with the watermark in since_param).
func (c *Connectors) Jobs() []poll.Job {
	var all []api.Connector
	c.defs.Each(func(d api.Connector) { all = append(all, d) })
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]poll.Job, 0, len(all))
	for _, d := range all {
		u, err := url.Parse(d.URL)
		if err != nil {
			continue // refused at add
		}
		if d.SinceParam != "" {
			if w := c.since[d.Name]; !w.IsZero() {
				q := u.Query()
				q.Set(d.SinceParam, w.UTC().Format(time.RFC3339Nano))
				u.RawQuery = q.Encode()
			}
		}
		params, _ := json.Marshal(httprequest.Params{URL: u.String(), Headers: d.Headers, Timeout: "20s", MaxBody: maxBody})
		iv, _ := time.ParseDuration(d.Interval)
		out = append(out, poll.Job{Name: d.Name, Site: d.Site, Kind: httprequest.Kind, Target: u.Hostname(), Params: params,
			Credential: d.Credential, Interval: iv})
	}
	return out
}

// Failed records a poll that could not be sent or failed.
func (c *Connectors) Failed(ctx context.Context, ref poll.Ref, cause error) {
	c.log.Warn("connector poll failed", "connector", ref.Name, "err", cause)
	if err := c.updateState(ctx, ref.Name, func(st *api.ConnectorState) {
		st.Polls++
		st.LastPoll, st.LastError = c.clock.Now().UTC(), cause.Error()
	}); err != nil {
		c.log.Warn("connector error not recorded", "connector", ref.Name, "err", err)
	}
}

// Result maps one poll's answer to events.
func (c *Connectors) Result(ctx context.Context, ref poll.Ref, r *envelope.Result) error {
	d, ok := c.def(ref.Name)
	if !ok {
		return nil // removed since the probe went out
	}
	recs, err := Records(d, r)
	if err != nil {
		c.Failed(ctx, ref, err)
		return nil
	}
	st, rev, err := c.state(ctx, d.Name)
	if err != nil {
		return err
	}
	timed := d.Fields["time"] != ""
	prev := st.IDs
	next := st
	next.IDs = nil
	var newest time.Time
	var events, skipped, rejected int64
	for i, rec := range recs {
		ev, rid, err := Map(d, rec, c.clock.Now())
		// A record an earlier poll took — mapped or rejected — is skipped: by the watermark
		// when records have a time, else by the previous poll's ids.
		known := ev != nil && (!timed || !ev.Time.IsZero())
		switch {
		case known && timed && (ev.Time.Before(st.Watermark) || (ev.Time.Equal(st.Watermark) && slices.Contains(prev, rid))):
			skipped++
			continue
		case known && !timed && slices.Contains(prev, rid):
			skipped++
			next.IDs = append(next.IDs, rid) // still in the answer: keep skipping it
			continue
		}
		if err != nil {
			rejected++
			c.reject(ctx, d, i, rec, err)
		} else {
			subject := bus.EventSubject(bus.OriginHub, ev.Source)
			if _, err := c.deps.Pub.Publish(ctx, subject, envelope.Meta{ID: ev.ID, Time: c.clock.Now().UTC()}, ev); err != nil {
				return fmt.Errorf("connector %s: publish event: %w", d.Name, err) // retried; ids make it idempotent
			}
			events++
		}
		if !known {
			continue // no time to hold it by: rejected again by the next poll, and counted
		}
		if timed {
			if ev.Time.After(newest) {
				newest, next.IDs = ev.Time, nil
			}
			if ev.Time.Equal(newest) {
				next.IDs = append(next.IDs, rid)
			}
		} else {
			next.IDs = append(next.IDs, rid)
		}
	}
	if timed {
		if newest.After(st.Watermark) {
			next.Watermark = newest
		} else {
			next.IDs = append(prev, next.IDs...) // nothing newer: the watermark's ids stand
		}
	}
	next.Polls++
	next.Events += events
	next.Skipped += skipped
	next.Rejected += rejected
	next.LastPoll, next.LastError = c.clock.Now().UTC(), ""
	if err := c.putState(ctx, d.Name, next, rev); err != nil {
		return fmt.Errorf("connector %s: state: %w", d.Name, err) // redelivered: the events go again under the same ids
	}
	c.Events.Add(events)
	c.Skipped.Add(skipped)
	c.Rejected.Add(rejected)
	c.mu.Lock()
	c.since[d.Name] = next.Watermark
	c.mu.Unlock()
	return nil
}

// reject dead-letters a record that could not be mapped, with its reason.
func (c *Connectors) reject(ctx context.Context, d api.Connector, i int, rec any, cause error) {
	body, _ := json.Marshal(rec)
	h := sha256.Sum256(body)
	reason := fmt.Sprintf("connector %s: record %d: %v", d.Name, i, cause)
	msg := &nats.Msg{Subject: bus.DLQOriginSubject(api.Service, bus.OriginHub), Data: body, Header: nats.Header{}}
	msg.Header.Set(nats.MsgIdHdr, "dlq:connector:"+d.Name+":"+hex.EncodeToString(h[:12]))
	msg.Header.Set(bus.HeaderDLQCode, bus.CodePermanent)
	msg.Header.Set(bus.HeaderDLQReason, reason)
	msg.Header.Set(bus.HeaderDLQSubject, bus.EventSubject(bus.OriginHub, api.ConnectorSourcePrefix+d.Name))
	msg.Header.Set(bus.HeaderDLQService, api.Service)
	msg.Header.Set(bus.HeaderDLQTime, c.clock.Now().UTC().Format(time.RFC3339Nano))
	if _, err := c.deps.JS.PublishMsg(ctx, msg); err != nil {
		c.log.Warn("connector record rejected and not dead-lettered", "connector", d.Name, "reason", reason, "err", err)
		return
	}
	c.log.Warn("connector record rejected", "connector", d.Name, "reason", reason)
}

// Records reads the records out of a poll's result.
func Records(d api.Connector, r *envelope.Result) ([]any, error) {
	if err := poll.ProbeError(r); err != nil {
		return nil, err
	}
	var res httprequest.Result
	if err := json.Unmarshal(r.Data, &res); err != nil {
		return nil, fmt.Errorf("http_request result: %w", err)
	}
	if err := poll.HTTPStatusError(res.Status); err != nil {
		return nil, fmt.Errorf("%s: %w", res.URL, err)
	}
	body := []byte(res.Body.Text)
	if res.Body.Base64 != "" {
		b, err := base64.StdEncoding.DecodeString(res.Body.Base64)
		if err != nil {
			return nil, fmt.Errorf("%s: body: %w", res.URL, err)
		}
		body = b
	}
	if res.Body.Truncated {
		return nil, fmt.Errorf("%s: the answer is larger than %d bytes: ask the API for fewer records (since_param, a page size)", res.URL, maxBody)
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("%s: the answer is not JSON: %w", res.URL, err)
	}
	path, _ := api.ParsePath(d.Records)
	v, ok := api.Lookup(doc, path)
	if !ok {
		return nil, fmt.Errorf("%s: no %q in the answer", res.URL, d.Records)
	}
	switch x := v.(type) {
	case []any:
		return x, nil
	case map[string]any:
		return []any{x}, nil
	case nil:
		return nil, nil
	}
	return nil, fmt.Errorf("%s: %q is neither a list of records nor one record", res.URL, d.Records)
}

// Map makes the event of one record and its id (the mapped id, else a hash of the record).
func Map(d api.Connector, rec any, now time.Time) (*envelope.Event, string, error) {
	if _, ok := rec.(map[string]any); !ok {
		b, _ := json.Marshal(rec)
		h := sha256.Sum256(b)
		return nil, hex.EncodeToString(h[:12]), errors.New("not an object")
	}
	get := func(path string) (string, bool, error) {
		p, _ := api.ParsePath(path)
		v, ok := api.Lookup(rec, p)
		if !ok || v == nil {
			return "", false, nil
		}
		switch x := v.(type) {
		case string:
			return x, true, nil
		case float64:
			return strconv.FormatFloat(x, 'f', -1, 64), true, nil
		case bool:
			return strconv.FormatBool(x), true, nil
		}
		return "", false, fmt.Errorf("%s is %T, not a value", path, v)
	}
	f := map[string]string{}
	var errs []error
	for k, p := range d.Fields {
		v, ok, err := get(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		} else if ok {
			f[k] = v
		}
	}
	add := map[string]string{"connector": d.Name}
	for k, p := range d.Additional {
		if v, ok, err := get(p); err != nil {
			errs = append(errs, fmt.Errorf("additional.%s: %w", k, err))
		} else if ok {
			add[k] = v
		}
	}
	rid := f["id"]
	if rid == "" {
		b, _ := json.Marshal(rec) // map keys sorted: the same record, the same id
		h := sha256.Sum256(b)
		rid = hex.EncodeToString(h[:12])
	}
	ev := &envelope.Event{Site: d.Site, Source: api.ConnectorSourcePrefix + d.Name, Type: f["type"], Node: f["node"], Resource: f["resource"],
		Metric: f["metric"], MessageKey: f["message_key"], Message: f["message"], Time: now.UTC(), Fields: add}
	if ev.Type == "" {
		ev.Type = cmpOr(d.Type, d.Name)
	}
	if ev.Node == "" && ev.MessageKey == "" {
		errs = append(errs, fmt.Errorf("no node (%s) and no message_key: an alert needs something to be about", d.Fields["node"]))
	}
	sev := f["severity"]
	if m, ok := d.Severities[sev]; ok {
		sev = m
	}
	sev = strings.ToLower(strings.TrimSpace(sev))
	if sev != "" && api.Rank(sev) < 0 {
		errs = append(errs, fmt.Errorf("severity %q: not one of %s (map it in severities)", f["severity"], strings.Join(api.Severities, ", ")))
	}
	ev.Severity = sev
	if t, ok := f["time"]; ok {
		pt, err := parseTime(t)
		if err != nil {
			errs = append(errs, fmt.Errorf("time: %w", err))
		}
		ev.Time = pt // zero when unreadable: such a record is not held by the watermark
	} else if d.Fields["time"] != "" {
		ev.Time = time.Time{}
		errs = append(errs, fmt.Errorf("time: no %s in the record (the watermark needs it)", d.Fields["time"]))
	}
	if len(errs) > 0 {
		return ev, rid, errors.Join(errs...) // ev for its time and id only: not to be published
	}
	h := sha256.Sum256([]byte(d.Name + "\x00" + rid))
	ev.ID = "conn-" + hex.EncodeToString(h[:12])
	return ev, rid, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// parseTime takes RFC 3339 or Unix seconds (milliseconds when it is that large).
func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 or Unix seconds", s)
	}
	if f > 1e12 {
		f /= 1000
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

func (c *Connectors) state(ctx context.Context, name string) (api.ConnectorState, uint64, error) {
	e, err := c.kvState.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return api.ConnectorState{}, 0, nil
	}
	if err != nil {
		return api.ConnectorState{}, 0, err
	}
	var st api.ConnectorState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return api.ConnectorState{}, 0, bus.Permanent(fmt.Errorf("connector %s: stored state unreadable: %w", name, err))
	}
	return st, e.Revision(), nil
}

func (c *Connectors) putState(ctx context.Context, name string, st api.ConnectorState, rev uint64) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = c.kvState.Create(ctx, name, b)
	} else {
		_, err = c.kvState.Update(ctx, name, b, rev)
	}
	return err
}

// updateState applies f with compare-and-set, again on a conflict.
func (c *Connectors) updateState(ctx context.Context, name string, f func(*api.ConnectorState)) error {
	var err error
	for range 5 {
		var st api.ConnectorState
		var rev uint64
		if st, rev, err = c.state(ctx, name); err != nil {
			return err
		}
		f(&st)
		if err = c.putState(ctx, name, st, rev); err == nil {
			return nil
		}
	}
	return err
}

// Add stores a connector.
func (c *Connectors) Add(ctx context.Context, d api.Connector) (api.Connector, error) {
	if err := d.Validate(); err != nil {
		return api.Connector{}, bus.Errorf(http.StatusBadRequest, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	d.Created, d.State = c.clock.Now().UTC(), nil
	if err := c.defs.Put(ctx, d); err != nil {
		return api.Connector{}, err
	}
	return d, nil
}

// List pages the connectors by name, each with its state.
func (c *Connectors) List(ctx context.Context, r page.Request) (api.ConnectorsResponse, error) {
	out, next, err := c.defs.Page(r)
	if err != nil {
		return api.ConnectorsResponse{}, err
	}
	for i := range out {
		if st, rev, err := c.state(ctx, out[i].Name); err == nil && rev > 0 {
			out[i].State = &st
		}
	}
	return api.ConnectorsResponse{Items: out, NextCursor: next}, nil
}

// Remove deletes a connector and its state.
func (c *Connectors) Remove(ctx context.Context, r api.NameRequest) (api.Connector, error) {
	d, err := c.defs.Remove(ctx, r.Name)
	if err != nil {
		return api.Connector{}, err
	}
	_ = c.kvState.Delete(ctx, r.Name)
	return d, nil
}
