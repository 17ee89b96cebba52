package correlation

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// intake streams a consumer's messages to one hop of the pipeline (the router, a partition)
// in batches that never wait to fill: a batch is the first message to come plus whatever
// else has already been delivered, up to max. A lone event goes on at once; a storm, whose
// messages pile up while a batch is written, goes in batches of max — the latency of a
// fetch that waits for its batch or its expiry (a lone event held the flush interval at
// each hop) is gone, and the throughput of large batches is kept.
type intake struct {
	ch   chan jetstream.Msg
	done chan struct{}
	cc   jetstream.ConsumeContext
	max  int
}

// startIntake consumes cons with up to max messages buffered in the client (they count as
// delivered and unacknowledged: a replica that dies with them gives them back after
// AckWait, and a partition's next owner replays them first, see catchUp).
func startIntake(cons jetstream.Consumer, max int, log *slog.Logger) (*intake, error) {
	in := &intake{ch: make(chan jetstream.Msg, max), done: make(chan struct{}), max: max}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select { // the handler runs on one goroutine: the channel keeps the stream's order
		case in.ch <- m:
		case <-in.done:
		}
	}, jetstream.PullMaxMessages(max), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The client re-pulls by itself after most of these (a missed heartbeat, a
		// reconnect); a deleted consumer ends the subscription and is worth a line.
		log.Warn("consuming", "err", err)
	}))
	if err != nil {
		return nil, fmt.Errorf("consume: %w", err)
	}
	in.cc = cc
	return in, nil
}

// next is the next batch, or nil when wait (real time) passed with nothing, so that the
// caller can run its timers, or when ctx ended.
func (in *intake) next(ctx context.Context, wait time.Duration) []jetstream.Msg {
	t := time.NewTimer(wait)
	defer t.Stop()
	var msgs []jetstream.Msg
	select {
	case m := <-in.ch:
		msgs = append(msgs, m)
	case <-t.C:
		return nil
	case <-ctx.Done():
		return nil
	}
	for len(msgs) < in.max {
		select {
		case m := <-in.ch:
			msgs = append(msgs, m)
		default:
			return msgs
		}
	}
	return msgs
}

// stop ends the subscription; messages delivered and not taken are left unacknowledged.
func (in *intake) stop() {
	close(in.done)
	in.cc.Stop()
	select {
	case <-in.cc.Closed():
	case <-time.After(5 * time.Second):
	}
}
