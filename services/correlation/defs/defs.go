// Package defs keeps a kind of named definition (a metric, a pull connector) in a KV bucket,
// mirrored in memory by a watch so that every replica polls from the same set, and answers the
// add/list/remove operations the gateway routes to it with the same status codes for each kind.
package defs

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/page"
)

// Store holds the definitions of one kind, keyed by name.
type Store[T any] struct {
	kv   jetstream.KeyValue
	what string         // the kind in messages: "metric", "connector"
	ls   string         // the command that lists them, for a 404's hint
	name func(T) string // a definition's name, its key
	log  *slog.Logger

	mu sync.RWMutex
	m  map[string]T
}

// New is a store over kv; what and ls name the kind and its list command in errors.
func New[T any](kv jetstream.KeyValue, what, ls string, name func(T) string, log *slog.Logger) *Store[T] {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store[T]{kv: kv, what: what, ls: ls, name: name, log: log, m: map[string]T{}}
}

// Watch mirrors the bucket until ctx ends; it returns once the definitions stored now are
// read. One that cannot be decoded is logged and left out (it is not run), never half-read.
func (s *Store[T]) Watch(ctx context.Context) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.kv.Bucket(), err)
	}
	ready := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		for e := range w.Updates() {
			if e == nil {
				close(ready)
				continue
			}
			s.apply(e)
		}
	}()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store[T]) apply(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.m, e.Key())
		return
	}
	var d T
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		s.log.Warn("a stored "+s.what+" cannot be read; it is not run", "bucket", s.kv.Bucket(), "key", e.Key(), "err", err)
		delete(s.m, e.Key())
		return
	}
	s.m[e.Key()] = d
}

// Get is the definition of a name as last seen.
func (s *Store[T]) Get(name string) (T, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.m[name]
	return d, ok
}

// Each calls f for every definition, in no order, under the read lock: f must not call the store.
func (s *Store[T]) Each(f func(T)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, d := range s.m {
		f(d)
	}
}

// Put stores a definition (validated by the caller) under its name: a new version of it.
func (s *Store[T]) Put(ctx context.Context, d T) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, s.name(d), b); err != nil {
		return bus.Errorf(http.StatusServiceUnavailable, "store %s %s, retry: %v", s.what, s.name(d), err)
	}
	return nil
}

// Page is a page of the definitions sorted by name.
func (s *Store[T]) Page(r page.Request) ([]T, string, error) {
	s.mu.RLock()
	items := make([]T, 0, len(s.m))
	for _, d := range s.m {
		items = append(items, d)
	}
	s.mu.RUnlock()
	sort.Slice(items, func(i, j int) bool { return s.name(items[i]) < s.name(items[j]) })
	return page.Slice(items, r, s.name, strings.Compare)
}

// Remove deletes a definition by name and returns it; an unknown name is a 404 that says how
// to list the known ones.
func (s *Store[T]) Remove(ctx context.Context, name string) (T, error) {
	d, ok := s.Get(name)
	if !ok {
		var zero T
		return zero, bus.Errorf(http.StatusNotFound, "no %s %q: list them with %s", s.what, name, s.ls)
	}
	if err := s.kv.Delete(ctx, name); err != nil {
		var zero T
		return zero, bus.Errorf(http.StatusServiceUnavailable, "remove %s %s, retry: %v", s.what, name, err)
	}
	return d, nil
}
