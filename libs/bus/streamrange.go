package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamRange picks stored messages of a stream for a replay or a rebuild: those matching
// Filter, from FromSeq, else from Since, else from the first.
type StreamRange struct {
	Stream  string
	Filter  string
	FromSeq uint64
	Since   time.Time
	Batch   int // messages a fetch; 500 when 0
}

// ReadRange reads the range with a fresh ordered consumer (nothing durable is left behind)
// until it has caught up with what was stored when it started, or f says stop (false) or
// fails. f gets each message with its stream sequence and the time the stream stored it.
func ReadRange(ctx context.Context, js jetstream.JetStream, r StreamRange, f func(m jetstream.Msg, seq uint64, stored time.Time) (bool, error)) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{r.Filter}, DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case r.FromSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.FromSeq
	case !r.Since.IsZero():
		since := r.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	batchSize := r.Batch
	if batchSize <= 0 {
		batchSize = 500
	}
	cons, err := js.OrderedConsumer(ctx, r.Stream, cfg)
	if err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	left := info.NumPending
	for left > 0 {
		batch, err := cons.Fetch(batchSize, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			left = md.NumPending
			more, err := f(m, md.Sequence.Stream, md.Timestamp)
			if err != nil || !more {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if got == 0 {
			// the consumer said messages were waiting and none came: say so rather than
			// report a shorter range as complete
			return fmt.Errorf("%s: %d messages announced but none delivered within 2 s", r.Stream, left)
		}
	}
	return nil
}
