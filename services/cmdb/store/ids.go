package store

import (
	"crypto/rand"
	"sync"

	"github.com/oklog/ulid/v2"
)

// ids makes the ULIDs of new CIs, relations and history rows — every id the CMDB makes, from
// one generator: history rows are read newest first by id, and two generators' ids made within
// one millisecond (the engine's history row and a stale marking's) would sort at random.
var ids struct {
	sync.Mutex
	ms  uint64
	rnd [10]byte
}

// NewID returns a new ULID, as ulid.Make().String() does — random across milliseconds,
// its random part incremented within one, so ids made in order sort in order — with one
// allocation (the string) instead of three: ulid.New hands the id's bytes to an io.Reader,
// which moves every id to the heap, and String encodes through a heap buffer. A new CI
// makes about five ids (itself, its history row, its relations): those allocations were a
// twentieth of an ingest's.
func NewID() string {
	ms := ulid.Now()
	var id ulid.ULID
	_ = id.SetTime(ms) // fails only after the year 10889
	ids.Lock()
	if ms != ids.ms || !increment(ids.rnd[:]) {
		ids.ms = ms
		_, _ = rand.Read(ids.rnd[:]) // crypto/rand.Read does not fail (it crashes the program instead)
	}
	copy(id[6:], ids.rnd[:])
	ids.Unlock()
	var text [ulid.EncodedSize]byte
	_ = id.MarshalTextTo(text[:]) // fails only for a short buffer
	return string(text[:])
}

// increment adds one to the big-endian number b; false when it wrapped around.
func increment(b []byte) bool {
	for i := len(b) - 1; i >= 0; i-- {
		b[i]++
		if b[i] != 0 {
			return true
		}
	}
	return false
}
