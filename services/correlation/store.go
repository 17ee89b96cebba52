package correlation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// KV buckets of the service.
const (
	// KVAlerts holds alerts: a.<slot> is the current alert of a dedup key (open,
	// acknowledged or closed), c.<id> a closed alert its key has since replaced.
	KVAlerts = "correlation_alerts"
	// KVSilences holds silences by id.
	KVSilences = "correlation_silences"
)

// Why KV and not SQLite: an alert is a small document read and written by key, replicas on
// several machines must see the same one, and compare-and-set on its revision is what keeps
// the processor and the API (ack, close) from overwriting each other. KV gives all three
// without a second store to run next to the bus.

func currentKey(slot string) string { return "a." + slot }
func closedKey(id string) string    { return "c." + id }

// alertStore reads and writes alerts with their revision.
type alertStore struct{ kv jetstream.KeyValue }

// errConflict: someone else wrote the alert since it was read.
var errConflict = errors.New("alert changed since it was read")

// get returns the current alert of a slot and its revision; nil, 0 when there is none.
func (s alertStore) get(ctx context.Context, slot string) (*api.Alert, uint64, error) {
	return s.getKey(ctx, currentKey(slot))
}

func (s alertStore) getKey(ctx context.Context, key string) (*api.Alert, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read alert %s: %w", key, err)
	}
	var a api.Alert
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return nil, 0, fmt.Errorf("alert %s in KV is not JSON: %w", key, err)
	}
	return &a, e.Revision(), nil
}

// put writes the current alert of a slot if its revision is still rev (0: it must not
// exist) and returns the new revision; errConflict otherwise.
func (s alertStore) put(ctx context.Context, slot string, a *api.Alert, rev uint64) (uint64, error) {
	b, err := json.Marshal(a)
	if err != nil {
		return 0, err
	}
	if rev == 0 {
		rev, err = s.kv.Create(ctx, currentKey(slot), b)
	} else {
		rev, err = s.kv.Update(ctx, currentKey(slot), b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSeq(err) {
		return 0, errConflict
	}
	if err != nil {
		return 0, fmt.Errorf("write alert %s: %w", a.ID, err)
	}
	return rev, nil
}

// archive keeps a closed alert its key no longer points to (idempotent: same id, same value).
func (s alertStore) archive(ctx context.Context, a *api.Alert) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, closedKey(a.ID), b); err != nil {
		return fmt.Errorf("archive alert %s: %w", a.ID, err)
	}
	return nil
}

// byID finds an alert by id: the current alert of its slot, or an archived one. The
// revision is that of the current alert (0 for an archived one, which never changes).
func (s alertStore) byID(ctx context.Context, id string) (*api.Alert, uint64, error) {
	slot, ok := slotOfID(id)
	if !ok {
		return nil, 0, nil
	}
	a, rev, err := s.get(ctx, slot)
	if err != nil || (a != nil && a.ID == id) {
		return a, rev, err
	}
	a, _, err = s.getKey(ctx, closedKey(id))
	return a, 0, err
}

// all reads every alert in one pass over the bucket.
func (s alertStore) all(ctx context.Context) ([]api.Alert, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []api.Alert
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil {
				return out, nil
			}
			var a api.Alert
			if err := json.Unmarshal(e.Value(), &a); err != nil {
				continue
			}
			out = append(out, a)
		}
	}
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
