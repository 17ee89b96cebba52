// Package poll runs the correlation service's scheduled collection: metric definitions and
// pull connectors become jobs, each fired every interval as a probe of an existing kind
// (http_request, snmp_get, ssh_exec) to its site's bridges on the "correlation" lane, and
// their results — read from RESULTS by one durable consumer every replica shares — are
// handed back to the job's owner. A bridge gains no listener and no subject for this: it
// runs probes and sends results as for any other application.
//
// One replica fires (lease correlation.collect, libs/lease); any replica handles results.
// The slot a probe was fired for travels in the probe's run, so the owner's handling is
// idempotent per slot whichever replica fired it and however often the result comes back.
package poll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/lease"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
)

// App is the application (and probe lane) of collection probes.
const App = bus.AppCorrelation

// ResultsConsumer is the durable consumer of RESULTS every replica binds.
const ResultsConsumer = "correlation_collect"

// LeaseKey is the key of the leases bucket held by the replica that fires jobs.
const LeaseKey = "correlation.collect"

// runPrefix starts the run of every collection probe: collect/<owner>/<name>/<slot>/<target>.
const runPrefix = "collect/"

// Consumers is the results consumer, provisioned by the hub with the service's others.
func Consumers() []bus.ConsumerSpec {
	return []bus.ConsumerSpec{{Stream: bus.StreamResults, Name: ResultsConsumer, Filters: []string{bus.ResultSubject(App, "*", "*", "*")},
		AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 1000,
		Description: "correlation: results of metric and connector probes"}}
}

// Job is one target of a definition, fired every Interval.
type Job struct {
	Owner      string // the handler's name ("metrics", "connector")
	Name       string // the definition's
	Site       string
	Kind       string
	Target     string
	Params     json.RawMessage
	Credential string
	Interval   time.Duration
}

// Ref names the job and slot a result answers.
type Ref struct {
	Owner, Name, Target string
	Slot                time.Time
}

func (r Ref) run() string {
	return runPrefix + r.Owner + "/" + r.Name + "/" + strconv.FormatInt(r.Slot.Unix(), 10) + "/" + r.Target
}

// ParseRun reads a collection probe's run back; ok is false for any other run.
func ParseRun(run string) (Ref, bool) {
	rest, ok := strings.CutPrefix(run, runPrefix)
	if !ok {
		return Ref{}, false
	}
	p := strings.SplitN(rest, "/", 4)
	if len(p) != 4 {
		return Ref{}, false
	}
	sec, err := strconv.ParseInt(p[2], 10, 64)
	if err != nil {
		return Ref{}, false
	}
	return Ref{Owner: p[0], Name: p[1], Slot: time.Unix(sec, 0).UTC(), Target: p[3]}, true
}

// Owner is what a definition type gives the poller.
type Owner interface {
	// Jobs lists the owner's jobs now (from its in-memory copy of its definitions).
	Jobs() []Job
	// Result handles the final result of a job's probe; an error is retried (bus.Permanent:
	// dead-lettered).
	Result(ctx context.Context, ref Ref, r *envelope.Result) error
	// Failed records that a job's probe could not be sent, so the user sees why nothing came.
	Failed(ctx context.Context, ref Ref, err error)
}

// Config of the poller.
type Config struct {
	Replica string
	// Lease is the TTL of the firing lease; Tick how often due jobs are looked for.
	Lease time.Duration
	Tick  time.Duration
}

// Deps are what the poller is given.
type Deps struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Logger *slog.Logger
	Tracer trace.TracerProvider
	Clock  clock.Clock
	Pub    *bus.Publisher
}

// Poller fires jobs and routes results to their owners.
type Poller struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	clock  clock.Clock
	owners map[string]Owner
	// fired is the last slot fired per job (memory of the lease holder: a new holder fires
	// the current slot again, which the owners take once).
	mu    sync.Mutex
	fired map[string]time.Time
	// Sent and Unrouted count probes sent and results no owner claimed (counted and acked).
	Sent, Unrouted atomic.Int64
}

// New makes a poller over owners by name.
func New(cfg Config, deps Deps, owners map[string]Owner) *Poller {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 10 * time.Second
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	return &Poller{cfg: cfg, deps: deps, log: log.With("stage", "collect"), clock: clock.Or(deps.Clock), owners: owners, fired: map[string]time.Time{}}
}

// Run fires jobs while this replica holds the lease and handles results, until ctx ends.
func (p *Poller) Run(ctx context.Context, kvLeases jetstream.KeyValue) error {
	r, err := bus.NewRouter(p.deps.NC, p.deps.JS, bus.RouterConfig{Service: "correlation", Topology: bus.Topology{Consumers: Consumers()},
		Logger: p.log, Tracer: p.deps.Tracer})
	if err != nil {
		return err
	}
	if err := r.Handle("collect-results", ResultsConsumer, bus.DecodedResult(p.result)); err != nil {
		return err
	}
	var wg sync.WaitGroup
	var rerr error
	wg.Go(func() { rerr = r.Run(ctx) })
	l := lease.New(lease.Config{JS: p.deps.JS, KV: kvLeases, Key: LeaseKey, Holder: p.cfg.Replica, TTL: p.cfg.Lease,
		Clock: p.clock, Logger: p.log, Name: "correlation collection"})
	_ = l.Serve(ctx, p.fire, func() {
		p.mu.Lock()
		clear(p.fired)
		p.mu.Unlock()
	})
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return rerr
}

// fire sends every due job's probe each tick.
func (p *Poller) fire(ctx context.Context) error {
	t := p.clock.NewTicker(p.cfg.Tick)
	defer t.Stop()
	for {
		p.Due(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// Due sends the probes of every job whose current slot was not fired yet.
func (p *Poller) Due(ctx context.Context) {
	now := p.clock.Now()
	for owner, o := range p.owners {
		for _, j := range o.Jobs() {
			if j.Interval <= 0 {
				continue
			}
			slot := time.Unix(0, now.UnixNano()-now.UnixNano()%int64(j.Interval)).UTC()
			key := owner + "/" + j.Name + "/" + j.Target
			p.mu.Lock()
			last, seen := p.fired[key]
			due := !seen || slot.After(last)
			if due {
				p.fired[key] = slot
			}
			p.mu.Unlock()
			if !due {
				continue
			}
			j.Owner = owner
			ref := Ref{Owner: owner, Name: j.Name, Target: j.Target, Slot: slot}
			if err := p.send(ctx, j, ref, now); err != nil {
				if ctx.Err() != nil {
					return
				}
				p.log.Warn("collection probe not sent", "owner", owner, "name", j.Name, "target", j.Target, "err", err)
				o.Failed(ctx, ref, err)
			}
		}
	}
}

// send publishes one job's probe for its slot, its credential sealed to the site's bridges.
func (p *Poller) send(ctx context.Context, j Job, ref Ref, now time.Time) error {
	spec, ok := catalog.Lookup(j.Kind)
	if !ok {
		return fmt.Errorf("probe kind %s is not in the catalog", j.Kind)
	}
	params := j.Params
	if len(params) == 0 {
		params = json.RawMessage(`{}`)
	}
	// The deadline gives a sibling bridge time to take over a dead one's probe, but a
	// sample older than its next slot is worth little.
	wait := min(max(j.Interval, 15*time.Second), 2*time.Minute)
	pr := &envelope.Probe{ID: envelope.NewID(), Run: ref.run(), App: App, Site: j.Site, Priority: envelope.PriorityStandard,
		Kind: spec.Kind, Capability: spec.Capability, Target: j.Target, Deadline: now.Add(wait)}
	if j.Credential != "" {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		sealed, err := discoveryapi.CredentialSeal.Call(rctx, p.deps.NC,
			discoveryapi.SealRequest{Site: j.Site, Kind: spec.Kind, Probe: pr.ID, Names: []string{j.Credential}, Target: j.Target})
		cancel()
		if err != nil {
			return fmt.Errorf("seal credential %s: %w", j.Credential, err)
		}
		pr.Credentials, pr.Secrets = []string{j.Credential}, sealed.Secrets
		if sealed.KnownHostKey != "" {
			var m map[string]any
			if err := json.Unmarshal(params, &m); err == nil {
				m["known_host_key"] = sealed.KnownHostKey
				params, _ = json.Marshal(m)
			}
		}
	}
	if err := spec.ValidateParams(params); err != nil {
		return fmt.Errorf("%s params: %w", spec.Kind, err)
	}
	pr.Params = params
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := bus.PublishProbe(pctx, p.deps.JS, p.deps.Pub, pr); err != nil {
		return err
	}
	p.Sent.Add(1)
	return nil
}

// result routes a final result to its owner. Streamed chunks are not expected from these
// kinds at the sizes collection uses; one that comes is the owner's error, not dropped.
func (p *Poller) result(ctx context.Context, _ envelope.Meta, r *envelope.Result) error {
	ref, ok := ParseRun(r.Run)
	o := p.owners[ref.Owner]
	if !ok || o == nil {
		p.Unrouted.Add(1)
		return bus.Permanent(fmt.Errorf("result %s of probe %s: run %q is no collection job's", r.ID, r.Probe, r.Run))
	}
	if !r.Final {
		return nil // an intermediate chunk: the final one carries the outcome
	}
	if r.Seq != 0 {
		o.Failed(ctx, ref, errors.New("the result came in several chunks (larger than a result holds): ask for less (a smaller document, fewer OIDs, shorter output)"))
		return nil
	}
	return o.Result(ctx, ref, r)
}

// ProbeError is a result's failure, worded for a series' or connector's last_error.
func ProbeError(r *envelope.Result) error {
	if r.Status == envelope.StatusOK {
		return nil
	}
	if r.Error != nil {
		return fmt.Errorf("%s probe %s by %s: %s: %s", r.Kind, r.Status, r.Agent, r.Error.Code, r.Error.Message)
	}
	return fmt.Errorf("%s probe %s by %s", r.Kind, r.Status, r.Agent)
}

// HTTPStatusError is a non-2xx answer of an http_request probe.
func HTTPStatusError(status int) error {
	if status >= 200 && status < 300 {
		return nil
	}
	return fmt.Errorf("the server answered %d %s", status, http.StatusText(status))
}
