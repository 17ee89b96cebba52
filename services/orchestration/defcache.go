package orchestration

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// defCache spares a run's start the reads of its definition: a version of a definition
// never changes once added, so it is kept, validated, after its first run; the latest
// version of each name is followed by a watch of the workflows bucket (and set at once
// by this replica's own adds, so a run right after an add starts the new version).
type defCache struct {
	mu     sync.Mutex
	ready  bool // the watch has delivered what was stored
	latest map[string]int
	byKey  map[string]cachedDef
	// changed is signalled when a definition is added (the cron loop looks again).
	changed chan struct{}
	// classesChanged is signalled when a definition is added or the watch is ready: the
	// triggers consumer's filter may change (changefilter.go).
	classesChanged chan struct{}
}

// cachedDef is a stored version of a definition with its validated form.
type cachedDef struct {
	d  api.Definition
	wf *workflow
}

func newDefCache() *defCache {
	return &defCache{latest: map[string]int{}, byKey: map[string]cachedDef{}, changed: make(chan struct{}, 1),
		classesChanged: make(chan struct{}, 1)}
}

// watch follows the bucket's keys until ctx ends.
func (c *defCache) watch(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx, jetstream.MetaOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for e := range w.Updates() {
		if e == nil {
			c.mu.Lock()
			c.ready = true
			c.mu.Unlock()
			signal(c.classesChanged)
			continue
		}
		name, v, ok := strings.Cut(e.Key(), ".")
		if n, err := strconv.Atoi(v); ok && err == nil {
			c.saw(name, n)
		}
	}
	return nil
}

// saw notes that version n of name exists.
func (c *defCache) saw(name string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.latest[name] {
		c.latest[name] = n
		signal(c.changed)
		signal(c.classesChanged)
	}
}

// signal wakes the one waiting on ch, never blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// isReady tells whether the watch has delivered every stored definition.
func (c *defCache) isReady() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// names lists the definitions the cache knows of.
func (c *defCache) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.latest))
	for n := range c.latest {
		out = append(out, n)
	}
	return out
}

// latestOf returns the latest version of name, ok false when the watch is not ready.
func (c *defCache) latestOf(name string) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.latest[name], c.ready
}

// runnable returns the version of name a run starts (0: the latest), validated, from the
// cache or else from the bucket.
func (s *service) runnable(ctx context.Context, name string, version int) (api.Definition, *workflow, error) {
	c := s.defs
	if version == 0 {
		if v, ready := c.latestOf(name); ready && v > 0 {
			version = v
		}
	}
	if version > 0 {
		c.mu.Lock()
		cd, ok := c.byKey[defKey(name, version)]
		c.mu.Unlock()
		if ok {
			return cd.d, cd.wf, nil
		}
	}
	d, err := s.definition(ctx, name, version)
	if err != nil {
		return api.Definition{}, nil, err
	}
	wf, err := validate(d.Name, d.Workflow)
	if err != nil {
		return api.Definition{}, nil, bus.Errorf(409, "workflow %s v%d no longer validates: %v", d.Name, d.Version, err)
	}
	c.saw(d.Name, d.Versions)
	c.mu.Lock()
	c.byKey[defKey(d.Name, d.Version)] = cachedDef{d: d, wf: wf}
	c.mu.Unlock()
	return d, wf, nil
}
