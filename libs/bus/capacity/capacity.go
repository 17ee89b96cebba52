// Package capacity watches every stream, KV bucket and object store of the hub's JetStream
// against its limits, so that a store at its limit is never silent: near a limit it warns,
// at it it raises an event saying what the store's discard policy now does — refuses writes
// (DiscardNew: the writers see errors and hold their data back) or evicts the oldest
// (DiscardOld) — and a store created without any limit is reported too. Each goes to the
// log, a counter and an event on event.hub.bus (bus.EventSubject(hub, "bus")), the way the
// DLQ warns before it discards (libs/bus/deadletters).
package capacity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Source is the event source of the watch's events (event.hub.bus).
const Source = "bus"

// Event types.
const (
	TypeNearLimit = "store_near_limit"
	TypeFull      = "store_full"
	TypeUnbounded = "store_unbounded"
)

// Config of the watch.
type Config struct {
	// WarnAt and FullAt are fill ratios of a store's byte or message limit: near at WarnAt
	// (default 0.8), full at FullAt (default 0.95: the next writes are refused or evict).
	// Each is raised once per crossing, again only after the fill dropped below 90 % of it.
	WarnAt, FullAt float64
	// CheckEvery is how often the fills are read (default 30 s).
	CheckEvery time.Duration
}

// DefaultConfig warns at 80 %, calls a store full at 95 %, every 30 s.
func DefaultConfig() Config { return Config{WarnAt: 0.8, FullAt: 0.95, CheckEvery: 30 * time.Second} }

// Validate reports every problem of the config.
func (c Config) Validate() error {
	var errs []error
	if c.WarnAt <= 0 || c.WarnAt > 1 {
		errs = append(errs, fmt.Errorf("capacity: WarnAt %v: want a ratio in (0, 1]", c.WarnAt))
	}
	if c.FullAt < c.WarnAt || c.FullAt > 1 {
		errs = append(errs, fmt.Errorf("capacity: FullAt %v: want a ratio in [WarnAt, 1]", c.FullAt))
	}
	if c.CheckEvery <= 0 {
		errs = append(errs, fmt.Errorf("capacity: CheckEvery %v: want a positive duration", c.CheckEvery))
	}
	return errors.Join(errs...)
}

// Deps of the watch.
type Deps struct {
	JS     jetstream.JetStream
	Logger *slog.Logger
	Clock  clock.Clock
	Meter  metric.Meter // may be nil
}

// Watch reads the stores' fills and raises what it finds.
type Watch struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	clock  clock.Clock
	pub    *bus.Publisher
	raised metric.Int64Counter

	mu     sync.Mutex
	levels map[string]string // store+limit → the level raised last ("near", "full", "unbounded")
}

// New returns a watch; Run runs it.
func New(cfg Config, deps Deps) (*Watch, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.JS == nil {
		return nil, errors.New("capacity: JetStream is required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watch{cfg: cfg, deps: deps, log: log.With("component", "capacity"), clock: clock.Or(deps.Clock),
		pub: bus.NewPublisher(deps.JS, envelope.ServiceSource(Source), nil), levels: map[string]string{}}
	if deps.Meter != nil {
		w.raised, _ = deps.Meter.Int64Counter("outpost.bus.store_limit", metric.WithDescription("times a store reached a level of its limits (near, full) or was found unbounded"))
	}
	return w, nil
}

// Run checks every CheckEvery until ctx ends.
func (w *Watch) Run(ctx context.Context) error {
	t := w.clock.NewTicker(w.cfg.CheckEvery)
	defer t.Stop()
	for {
		w.Check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// Finding is one thing Check raised.
type Finding struct {
	Store, Limit, Level string
	Have, Max           int64
}

// Check reads the fill of every stream of the account and raises each level crossed since
// the last check. It returns what it raised.
func (w *Watch) Check(ctx context.Context) []Finding {
	var found []Finding
	seen := map[string]bool{}
	lister := w.deps.JS.ListStreams(ctx)
	for info := range lister.Info() {
		c, st := info.Config, info.State
		if c.MaxBytes <= 0 && c.MaxMsgs <= 0 { // an age alone does not bound a burst
			key := c.Name + "/unbounded"
			seen[key] = true
			if f, ok := w.raise(ctx, key, "unbounded", Finding{Store: c.Name, Limit: "none"}, c); ok {
				found = append(found, f)
			}
			continue
		}
		for _, l := range []struct {
			name      string
			have, max int64
		}{{"bytes", int64(st.Bytes), c.MaxBytes}, {"messages", int64(st.Msgs), c.MaxMsgs}} {
			if l.max <= 0 {
				continue
			}
			key := c.Name + "/" + l.name
			seen[key] = true
			ratio := float64(l.have) / float64(l.max)
			level := ""
			switch {
			case ratio >= w.cfg.FullAt:
				level = "full"
			case ratio >= w.cfg.WarnAt:
				level = "near"
			}
			if f, ok := w.raise(ctx, key, level, Finding{Store: c.Name, Limit: l.name, Have: l.have, Max: l.max}, c); ok {
				found = append(found, f)
			}
			// below 90 % of the lowest level: armed again
			if level == "" && ratio < w.cfg.WarnAt*0.9 {
				w.mu.Lock()
				delete(w.levels, key)
				w.mu.Unlock()
			}
		}
	}
	if err := lister.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		w.log.Debug("stores not listed", "err", err)
	}
	w.mu.Lock()
	for k := range w.levels {
		if !seen[k] {
			delete(w.levels, k)
		}
	}
	w.mu.Unlock()
	return found
}

// raise reports level for key unless it was reported already (a lower level after a
// higher one is not reported again: the store is draining).
func (w *Watch) raise(ctx context.Context, key, level string, f Finding, c jetstream.StreamConfig) (Finding, bool) {
	if level == "" {
		return f, false
	}
	w.mu.Lock()
	prev := w.levels[key]
	if prev == level || (prev == "full" && level == "near") {
		w.mu.Unlock()
		return f, false
	}
	w.levels[key] = level
	w.mu.Unlock()
	f.Level = level
	w.publish(ctx, f, c)
	return f, true
}

func (w *Watch) publish(ctx context.Context, f Finding, c jetstream.StreamConfig) {
	line, inTable := tableLine(c.Name)
	then := "the oldest messages are evicted to make room"
	if c.Discard == jetstream.DiscardNew {
		then = "new writes are refused: their writers see errors and hold their data back"
	}
	var typ, sev, msg string
	switch f.Level {
	case "unbounded":
		typ, sev = TypeUnbounded, "warning"
		msg = fmt.Sprintf("store %s has no limit: it can grow until the hub's JetStream store is full and every write fails; declare it in libs/bus/stores.go", c.Name)
	case "near":
		typ, sev = TypeNearLimit, "warning"
		msg = fmt.Sprintf("store %s at %d of %d %s (%.0f %%): at its limit %s", c.Name, f.Have, f.Max, f.Limit, 100*float64(f.Have)/float64(f.Max), then)
	default:
		typ, sev = TypeFull, "critical"
		msg = fmt.Sprintf("store %s is full: %d of %d %s; %s", c.Name, f.Have, f.Max, f.Limit, then)
	}
	if inTable && line.Why != "" {
		msg += " (" + line.Why + ")"
	}
	w.log.Warn("store limit", "store", c.Name, "level", f.Level, "limit", f.Limit, "have", f.Have, "max", f.Max)
	if w.raised != nil {
		w.raised.Add(ctx, 1, metric.WithAttributes(attribute.String("store", c.Name), attribute.String("level", f.Level)))
	}
	ev := &envelope.Event{ID: envelope.NewID(), Site: bus.OriginHub, Source: Source, Type: typ, Severity: sev,
		MessageKey: typ + ":" + c.Name + ":" + f.Limit, Message: msg, Resource: c.Name, Time: w.clock.Now().UTC(),
		Fields: map[string]string{"limit": f.Limit, "have": strconv.FormatInt(f.Have, 10), "max": strconv.FormatInt(f.Max, 10),
			"discard": c.Discard.String()}}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := w.pub.Publish(pctx, bus.EventSubject(bus.OriginHub, Source), envelope.Meta{ID: ev.ID}, ev); err != nil {
		w.log.Warn("store limit event not published", "store", c.Name, "err", err)
	}
}

// tableLine finds the stores table's line of a JetStream stream name.
func tableLine(stream string) (bus.Store, bool) {
	for _, s := range bus.Stores(bus.DefaultLimits()) {
		if s.JetStreamName() == stream {
			return s, true
		}
	}
	return bus.Store{}, false
}
