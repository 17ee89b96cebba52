package correlation

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// watchSilences keeps every replica's copy of the silences bucket current: the silences
// stage reads memory, not KV, per alert. It returns once the initial values are loaded.
func (s *service) watchSilences(ctx context.Context) error {
	w, err := s.kvSil.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("correlation: watch silences: %w", err)
	}
	loaded := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(loaded)
					}
					continue
				}
				s.silMu.Lock()
				if e.Operation() != jetstream.KeyValuePut {
					delete(s.silences, e.Key())
				} else {
					var sil api.Silence
					if json.Unmarshal(e.Value(), &sil) == nil {
						s.silences[e.Key()] = sil
					}
				}
				s.silMu.Unlock()
			}
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// activeSilences are the silences not yet over, ordered by id.
func (s *service) activeSilences() []api.Silence {
	now := s.clock.Now()
	s.silMu.RLock()
	defer s.silMu.RUnlock()
	out := make([]api.Silence, 0, len(s.silences))
	for _, sil := range s.silences {
		if now.Before(sil.EndsAt) {
			out = append(out, sil)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// allSilences are every silence in the bucket, ordered by id.
func (s *service) allSilences() []api.Silence {
	s.silMu.RLock()
	defer s.silMu.RUnlock()
	out := make([]api.Silence, 0, len(s.silences))
	for _, sil := range s.silences {
		out = append(out, sil)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
