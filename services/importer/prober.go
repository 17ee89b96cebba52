package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
	"github.com/outpost-dev/outpost/services/importer/source"
)

// probeAttempts is how often a probe is sent again when no bridge answered it by its
// deadline (each time with a new id: a bridge's store of executed probes answers an id
// it ran with that run's final result only, not with its streamed chunks).
const probeAttempts = 3

// prober sends a run's probes to its source's site (source.Prober). Results are read
// from RESULTS by an ordered consumer of the kind's subject opened before the probe is
// sent: nothing durable to clean up, and a restarted importer simply asks again.
type prober struct {
	s          *service
	run        string
	site       string
	credential string
}

// probeTimeout is the probe's own timeout param (the kinds' defaults otherwise).
func probeTimeout(raw []byte) time.Duration {
	var p struct {
		Timeout string `json:"timeout"`
	}
	_ = json.Unmarshal(raw, &p)
	if d, err := time.ParseDuration(p.Timeout); err == nil && d > 0 {
		return d
	}
	return time.Minute
}

func (p *prober) Probe(ctx context.Context, kind, target string, params any, each func(source.Chunk) error) (envelope.Result, error) {
	spec, ok := catalog.Lookup(kind)
	if !ok {
		return envelope.Result{}, fmt.Errorf("probe kind %s is not in the catalog", kind)
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return envelope.Result{}, err
	}
	if err := spec.ValidateParams(raw); err != nil {
		return envelope.Result{}, fmt.Errorf("%s params: %w", kind, err)
	}
	// The deadline leaves the bridge its timeout plus time for a sibling to take the probe
	// over when its bridge dies (the probe consumers' AckWait).
	wait := probeTimeout(raw) + time.Minute
	var lastErr error
	for attempt := 1; attempt <= probeAttempts; attempt++ {
		res, err := p.once(ctx, spec, target, raw, wait, each)
		if err == nil || ctx.Err() != nil {
			return res, err
		}
		var pe *source.ProbeError
		if errors.As(err, &pe) {
			return res, err // the site answered: not a matter of waiting longer
		}
		lastErr = err
		p.s.log.Warn("import probe: no answer, sending it again", "run", p.run, "kind", kind, "site", p.site, "attempt", attempt, "err", err)
	}
	return envelope.Result{}, fmt.Errorf("%s probe to site %s: %w (are its bridges up? `outpost agents ls`)", kind, p.site, lastErr)
}

func (p *prober) once(ctx context.Context, spec probes.Spec, target string, raw []byte, wait time.Duration, each func(source.Chunk) error) (envelope.Result, error) {
	js := p.s.deps.JS
	// The consumer starts after the stream's last message as of now, before the probe is
	// sent: an ordered consumer is made on its first fetch, and with "deliver new" a fast
	// bridge's results published before that would be missed.
	stream, err := js.Stream(ctx, bus.StreamResults)
	if err != nil {
		return envelope.Result{}, fmt.Errorf("read results: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return envelope.Result{}, fmt.Errorf("read results: %w", err)
	}
	cons, err := js.OrderedConsumer(ctx, bus.StreamResults, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.ResultSubject(Service, p.site, spec.Kind, "*")},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy, OptStartSeq: info.State.LastSeq + 1})
	if err != nil {
		return envelope.Result{}, fmt.Errorf("read results: %w", err)
	}
	now := p.s.now()
	pr := &envelope.Probe{ID: envelope.NewID(), Run: p.run, App: Service, Site: p.site, Priority: envelope.PriorityStandard,
		Kind: spec.Kind, Capability: spec.Capability, Target: target, Params: raw, Deadline: now.Add(wait)}
	if p.credential != "" {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		sealed, err := discoveryapi.CredentialSeal.Call(rctx, p.s.deps.NC,
			discoveryapi.SealRequest{Site: p.site, Kind: spec.Kind, Probe: pr.ID, Names: []string{p.credential}, Target: target})
		cancel()
		if err != nil {
			var se *bus.ServiceError
			if errors.As(err, &se) && se.Code >= 400 && se.Code < 500 {
				return envelope.Result{}, &source.ProbeError{Kind: spec.Kind, Status: envelope.StatusDenied, Code: "credential", Message: err.Error()}
			}
			return envelope.Result{}, fmt.Errorf("seal credential %s: %w", p.credential, err)
		}
		pr.Credentials, pr.Secrets = []string{p.credential}, sealed.Secrets
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = bus.PublishProbe(pctx, js, p.s.pub, pr)
	cancel()
	if err != nil {
		return envelope.Result{}, err
	}
	var execs source.Execs
	deadline := now.Add(wait + 30*time.Second)
	for {
		if p.s.clock.Now().After(deadline) {
			return envelope.Result{}, fmt.Errorf("no result for probe %s by its deadline %s", pr.ID, pr.Deadline.Format(time.RFC3339))
		}
		batch, err := cons.Fetch(64, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return envelope.Result{}, ctx.Err()
			}
			return envelope.Result{}, fmt.Errorf("read results: %w", err)
		}
		for m := range batch.Messages() {
			_, r, err := envelope.DecodeInto[*envelope.Result](m.Headers(), m.Data())
			if err != nil || r.Probe != pr.ID {
				continue
			}
			if err := bus.ResultOrigin(m.Subject(), r); err != nil {
				p.s.log.Warn("import probe: result refused", "subject", m.Subject(), "err", err)
				continue
			}
			key := execs.Key(*r)
			if r.Final {
				return *r, source.FinalError(*r)
			}
			if each != nil {
				if err := each(source.Chunk{Exec: key, Result: *r}); err != nil {
					return envelope.Result{}, err
				}
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			if ctx.Err() != nil {
				return envelope.Result{}, ctx.Err()
			}
			return envelope.Result{}, fmt.Errorf("read results: %w", err)
		}
	}
}
