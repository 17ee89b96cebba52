package correlation

import (
	"context"
	"maps"
	"sync"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/services/correlation/connector"
	"github.com/outpost-dev/outpost/services/correlation/metrics"
	"github.com/outpost-dev/outpost/services/correlation/poll"
)

// collectors wires scheduled collection into the service: metric definitions and pull
// connectors (their own packages) fired by one poller. What they make are events on
// event.hub.<source>, read by the router like any other, so nothing here touches the
// pipeline.
type collectors struct {
	poller  *poll.Poller
	metrics *metrics.Metrics
	conns   *connector.Connectors
}

func newCollectors(ctx context.Context, s *service) (*collectors, error) {
	m, err := metrics.New(ctx, s.cfg.Metrics, metrics.Deps{NC: s.deps.NC, JS: s.deps.JS, Logger: s.log, Tracer: s.deps.Tracer, Clock: s.clock, Pub: s.pub})
	if err != nil {
		return nil, err
	}
	c, err := connector.New(ctx, connector.Deps{JS: s.deps.JS, Logger: s.log, Clock: s.clock, Pub: s.pub})
	if err != nil {
		return nil, err
	}
	p := poll.New(poll.Config{Replica: s.cfg.Replica, Lease: s.cfg.ActiveLease},
		poll.Deps{NC: s.deps.NC, JS: s.deps.JS, Logger: s.log, Tracer: s.deps.Tracer, Clock: s.clock, Pub: s.pub},
		map[string]poll.Owner{metrics.Owner: m, connector.Owner: c})
	return &collectors{poller: p, metrics: m, conns: c}, nil
}

// run serves until ctx ends; a part that fails is logged, the others go on.
func (c *collectors) run(ctx context.Context, s *service) {
	var wg sync.WaitGroup
	for name, f := range map[string]func(context.Context) error{
		"metrics": c.metrics.Run, "connectors": c.conns.Run,
		"collection": func(ctx context.Context) error { return c.poller.Run(ctx, s.kvLse) },
	} {
		wg.Go(func() {
			if err := f(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("correlation "+name+" stopped", "err", err)
			}
		})
	}
	wg.Wait()
}

func (c *collectors) endpoints() map[string]bus.Endpoint {
	return map[string]bus.Endpoint{
		api.MetricAdd.Name:       api.MetricAdd.Handle(c.metrics.Add),
		api.MetricList.Name:      api.MetricList.Handle(c.metrics.List),
		api.MetricRemove.Name:    api.MetricRemove.Handle(c.metrics.Remove),
		api.SeriesList.Name:      api.SeriesList.Handle(c.metrics.Series),
		api.ConnectorAdd.Name:    api.ConnectorAdd.Handle(c.conns.Add),
		api.ConnectorList.Name:   api.ConnectorList.Handle(c.conns.List),
		api.ConnectorRemove.Name: api.ConnectorRemove.Handle(c.conns.Remove),
	}
}

// withCollectors adds the collection endpoints to the service's.
func withCollectors(eps map[string]bus.Endpoint, c *collectors) map[string]bus.Endpoint {
	if c != nil {
		maps.Copy(eps, c.endpoints())
	} else {
		// the contract test builds endpoints without a running service: same names, no state
		maps.Copy(eps, (&collectors{metrics: &metrics.Metrics{}, conns: &connector.Connectors{}}).endpoints())
	}
	return eps
}
