package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Store writes the state of the lease holder into a KV bucket, fenced: every value carries
// the writer's token in a top-level "fence" field, every write is a compare-and-set on the
// revision the writer last saw, and a value written under a newer token is never
// overwritten. So a replica that passed its Token check and was then frozen before its write
// landed cannot overwrite what the next holder wrote; at worst its write lands on a key the
// next holder has not touched yet, and the next holder's own write of that key replaces it.
type Store struct {
	lease *Active
	kv    jetstream.KeyValue
	mu    sync.Mutex
	revs  map[string]uint64 // key → revision of this replica's last write or read
}

// Store returns a fenced writer of the bucket for this lease.
func (a *Active) Store(kv jetstream.KeyValue) *Store {
	return &Store{lease: a, kv: kv, revs: map[string]uint64{}}
}

// Fenced is a value that carries its writer's token.
type Fenced struct {
	Fence uint64 `json:"fence,omitempty"`
}

// Seen records the revision a read of key returned, sparing the first write a round trip.
func (s *Store) Seen(key string, rev uint64) {
	s.mu.Lock()
	s.revs[key] = rev
	s.mu.Unlock()
}

// Forget drops what the store remembers of keys (a finished run's): memory stays bounded.
func (s *Store) Forget(keys ...string) {
	s.mu.Lock()
	for _, k := range keys {
		delete(s.revs, k)
	}
	s.mu.Unlock()
}

// Put writes the value encode makes for the current token (it must put the token in the
// value's "fence" field). ErrFenced: the lease is not held, or a newer holder wrote the key.
func (s *Store) Put(ctx context.Context, key string, encode func(token uint64) ([]byte, error)) error {
	token, err := s.lease.Token()
	if err != nil {
		return err
	}
	b, err := encode(token)
	if err != nil {
		return err
	}
	s.mu.Lock()
	rev, known := s.revs[key]
	s.mu.Unlock()
	for attempt := 0; attempt < 3; attempt++ {
		var nrev uint64
		if known {
			nrev, err = s.kv.Update(ctx, key, b, rev)
		} else {
			nrev, err = s.kv.Create(ctx, key, b)
		}
		if err == nil {
			s.Seen(key, nrev)
			return nil
		}
		if !conflict(err) {
			return err
		}
		// someone else wrote the key since: who?
		if rev, known, err = s.current(ctx, key, token); err != nil {
			return err
		}
	}
	return fmt.Errorf("kv %s: key %s keeps changing under this writer", s.kv.Bucket(), key)
}

// Delete removes key unless a newer holder wrote it.
func (s *Store) Delete(ctx context.Context, key string) error {
	token, err := s.lease.Token()
	if err != nil {
		return err
	}
	s.mu.Lock()
	rev, known := s.revs[key]
	s.mu.Unlock()
	for attempt := 0; attempt < 3; attempt++ {
		if !known {
			if rev, known, err = s.current(ctx, key, token); err != nil {
				return err
			}
			if !known {
				return nil // nothing there
			}
		}
		err = s.kv.Delete(ctx, key, jetstream.LastRevision(rev))
		if err == nil {
			s.Forget(key)
			return nil
		}
		if !conflict(err) {
			return err
		}
		known = false
	}
	return fmt.Errorf("kv %s: key %s keeps changing under this writer", s.kv.Bucket(), key)
}

// current reads key: its revision (known false when absent or deleted), or ErrFenced when
// its value was written under a newer token than ours.
func (s *Store) current(ctx context.Context, key string, token uint64) (uint64, bool, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		s.Forget(key)
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var f Fenced
	_ = json.Unmarshal(e.Value(), &f)
	if f.Fence > token {
		s.lease.fenced(fmt.Sprintf("kv %s key %s written under fence %d, ours is %d", s.kv.Bucket(), key, f.Fence, token))
		return 0, false, ErrFenced
	}
	return e.Revision(), true, nil
}

func conflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
