package collect

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// BatchConfig bounds how a collector gathers events before it stores them: a stored message
// costs the outbox, the WAN link and every stage of the hub's pipeline about the same
// whether it holds one event or hundreds (~46 µs of CPU per event one a message against
// ~18 µs a hundred a message), and syslog lines and traps come one at a time. A batch is
// stored when it holds MaxEvents, reaches MaxBytes, or its first event waited Linger —
// whichever comes first.
//
// What is at risk: syslog (UDP, TCP, TLS) has no acknowledgement, so an event a sender
// handed over sits in memory until its batch is in the outbox — at most Linger plus one
// outbox write. A crash (not a shutdown: Close stores the pending batch) in that window
// loses those events. Informs are acknowledged only once their batch is in the outbox.
type BatchConfig struct {
	MaxEvents int           `yaml:"max_events"`
	MaxBytes  int           `yaml:"max_bytes"`
	Linger    time.Duration `yaml:"linger"`
}

// Bounds of BatchConfig: a message stays well under the bus's maximum payload (1 MiB),
// and a lingering event is not held long enough to matter to a person or a crash.
const (
	MaxBatchBytes  = 768 << 10
	MinBatchBytes  = 4 << 10
	MaxBatchLinger = time.Second
)

// DefaultBatchConfig: 500 events, 256 KiB or 25 ms — a burst fills batches, a lone line
// waits 25 ms, far below what event → alert latency is measured in.
func DefaultBatchConfig() BatchConfig {
	return BatchConfig{MaxEvents: 500, MaxBytes: 256 << 10, Linger: 25 * time.Millisecond}
}

// WithDefaults fills the zero fields from DefaultBatchConfig.
func (b BatchConfig) WithDefaults() BatchConfig {
	d := DefaultBatchConfig()
	if b.MaxEvents == 0 {
		b.MaxEvents = d.MaxEvents
	}
	if b.MaxBytes == 0 {
		b.MaxBytes = d.MaxBytes
	}
	if b.Linger == 0 {
		b.Linger = d.Linger
	}
	return b
}

// Validate reports every problem; zero fields take their defaults.
func (b BatchConfig) Validate() error {
	var errs []error
	if b.MaxEvents < 0 || b.MaxEvents > envelope.MaxEventBatch {
		errs = append(errs, fmt.Errorf("collect.batch.max_events %d: want 1..%d (1 stores every event on its own)", b.MaxEvents, envelope.MaxEventBatch))
	}
	if b.MaxBytes != 0 && (b.MaxBytes < MinBatchBytes || b.MaxBytes > MaxBatchBytes) {
		errs = append(errs, fmt.Errorf("collect.batch.max_bytes %d: want %d..%d (a message must fit the bus's 1 MiB payload)", b.MaxBytes, MinBatchBytes, MaxBatchBytes))
	}
	if b.Linger < 0 || b.Linger > MaxBatchLinger {
		errs = append(errs, fmt.Errorf("collect.batch.linger %s: want 1ms..%s — events wait this long in memory, unacknowledged, before they are stored", b.Linger, MaxBatchLinger))
	}
	return errors.Join(errs...)
}

// batcher gathers one source's events into batches and stores them in arrival order: a
// full batch is stored by the goroutine that filled it (so a slow outbox slows the readers
// rather than growing memory), a lingering one by a timer of the injected clock.
type batcher struct {
	c      *Collectors
	source string
	cfg    BatchConfig
	ctx    context.Context // for stores: not cancelled with the collectors, so Close can store

	// write is held while a batch is taken and stored, so batches are stored in the order
	// their events came.
	write sync.Mutex

	mu     sync.Mutex
	evs    []*envelope.Event
	sizes  []int
	bytes  int
	timer  clock.Timer
	gen    uint64 // of the armed timer: a stale one does nothing
	closed bool
}

func newBatcher(c *Collectors, source string, ctx context.Context) *batcher {
	return &batcher{c: c, source: source, cfg: c.cfg.Batch, ctx: context.WithoutCancel(ctx)}
}

// add queues an event; a batch it fills is stored before add returns.
func (b *batcher) add(ev *envelope.Event) {
	size := eventSize(ev)
	b.mu.Lock()
	if b.closed { // a reader outliving Close (Close waits for readers first): store at once
		b.mu.Unlock()
		b.store([]*envelope.Event{ev})
		return
	}
	b.evs, b.sizes, b.bytes = append(b.evs, ev), append(b.sizes, size), b.bytes+size
	full := b.fullLocked()
	if !full && b.timer == nil {
		b.armLocked()
	}
	b.mu.Unlock()
	if full {
		b.flush(false)
	}
}

// addNow queues an event and stores everything pending, returning once it is stored: for
// input whose sender is acknowledged (an inform).
func (b *batcher) addNow(ev *envelope.Event) {
	b.mu.Lock()
	b.evs, b.sizes, b.bytes = append(b.evs, ev), append(b.sizes, eventSize(ev)), b.bytes+eventSize(ev)
	b.mu.Unlock()
	b.flush(true)
}

func (b *batcher) fullLocked() bool {
	return len(b.evs) >= b.cfg.MaxEvents || b.bytes >= b.cfg.MaxBytes
}

func (b *batcher) armLocked() {
	b.gen++
	gen := b.gen
	b.timer = b.c.clock.AfterFunc(b.cfg.Linger, func() {
		b.mu.Lock()
		stale := gen != b.gen || b.closed
		b.mu.Unlock()
		if !stale {
			b.flush(true)
		}
	})
}

// flush stores batches from the front: when all, every event pending when it is called
// (not those that come meanwhile: under a steady stream that would store whatever arrived
// during the last write, in small batches), and in any case while a full batch waits. Each
// batch holds at most MaxEvents and MaxBytes (a single event over MaxBytes goes alone: the
// sink splits or refuses it with a reason). What remains gets a linger timer of its own,
// so an event waits at most Linger plus the writes ahead of it.
func (b *batcher) flush(all bool) {
	b.write.Lock()
	defer b.write.Unlock()
	due := 0
	if all {
		b.mu.Lock()
		due = len(b.evs)
		b.mu.Unlock()
	}
	for {
		b.mu.Lock()
		if len(b.evs) == 0 || (due <= 0 && !b.fullLocked()) {
			if len(b.evs) > 0 && b.timer == nil && !b.closed {
				b.armLocked()
			}
			b.mu.Unlock()
			return
		}
		n, bytes := 0, 0
		for n < len(b.evs) && n < b.cfg.MaxEvents && (n == 0 || bytes+b.sizes[n] <= b.cfg.MaxBytes) {
			bytes += b.sizes[n]
			n++
		}
		evs := b.evs[:n:n]
		b.evs, b.sizes, b.bytes = b.evs[n:], b.sizes[n:], b.bytes-bytes
		if len(b.evs) == 0 {
			b.evs, b.sizes = nil, nil // let the stored batch's array go
		}
		due -= n
		// The timer belongs to the oldest events, just taken.
		if b.timer != nil {
			b.timer.Stop()
			b.timer = nil
			b.gen++
		}
		b.mu.Unlock()
		b.store(evs)
	}
}

func (b *batcher) store(evs []*envelope.Event) { _ = b.c.store(b.ctx, b.source, evs) }

// close stores what is pending; later events are stored one by one.
func (b *batcher) close() {
	b.flush(true)
	b.mu.Lock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
		b.timer, b.gen = nil, b.gen+1
	}
	b.mu.Unlock()
	b.flush(true) // anything added between the two
}

func (b *batcher) pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.evs)
}

// eventSize estimates an event's share of an encoded batch (JSON: its strings, its field
// names, its ID and time); the sink checks the real size.
func eventSize(ev *envelope.Event) int {
	n := 200 + len(ev.Node) + len(ev.Type) + len(ev.Resource) + len(ev.Metric) + len(ev.Message) + len(ev.MessageKey) + len(ev.Site) + len(ev.Source)
	for k, v := range ev.Fields {
		n += len(k) + len(v) + 8
	}
	return n
}
