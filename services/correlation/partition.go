package correlation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Partitions: the router stage (every replica, one shared consumer of EVENTS) decodes,
// normalizes and keys each event and republishes it on corr.part.<p>, p a hash of the
// partition key; the replica that holds partition p's lease is the only one folding its
// events into alerts, timing its groups and notifying them. So two replicas share the load
// (each holds about half the partitions), one key's events are applied by one replica in
// order, and a partition moves to a survivor when its owner dies (its lease expires).
//
// The router publishes one message per partition per batch it routes (routedBatch: many
// events, stored, delivered and acknowledged once), not one per event: per message is what
// the bus spends. The partition stream has interest retention: a batch stays until its
// partition's durable consumer acknowledges it, however long no replica runs — nothing is
// lost between the router and the owner.
//
// Nothing is counted twice, whatever is routed again. A router that dies after publishing
// and before acknowledging its EVENTS messages leaves them to be routed again, in another
// batch, so under another message id: the partition stream's duplicate window does not
// catch that copy, and it is not what keeps counts right. Each alert does: it records the
// EVENTS sequences of the messages whose events it took (api.Alert.AppliedEvents, kept
// above the events consumer's acknowledgement floor — below it nothing is routed again),
// and an event of a message already there is skipped. A message's sequence stands for all
// its events of the alert's key because the router puts them all in one partition message
// and the owner writes each alert's share of a batch at once.
const (
	// StreamPartitions is the service's own stream between router and partition owners.
	StreamPartitions = "CORR_PARTITIONS"
	partitionSubject = "corr.part."
)

// partitionDupWindow outlasts the router's AckWait: a part routed again as it was (same
// messages, same id) is still a duplicate; other copies are the alerts' to skip (above).
const partitionDupWindow = 5 * time.Minute

func partitionSubjectOf(p int) string { return partitionSubject + strconv.Itoa(p) }

func partitionConsumer(p int) string { return "correlation_p" + strconv.Itoa(p) }

func partitionLeaseKey(p int) string { return "correlation.part." + strconv.Itoa(p) }

// partitionOf is the partition of a partition key (FNV-1a: stable across processes and
// versions, so every replica routes a key to the same partition).
func partitionOf(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// routed is one event as the router hands it to its partition: normalized, keyed, with
// the EVENTS sequence of the message it came in. A message of an earlier router (one event
// per message) is one routed, and is still read.
type routed struct {
	EventSeq uint64          `json:"event_seq"`
	Key      string          `json:"key"`
	Event    *envelope.Event `json:"event"`
	// Threshold is the event rule's threshold, applied by the partition (it counts).
	Threshold *Threshold `json:"threshold,omitempty"`
	// Replay: routed again by a replay (replay.go), not by the live router: applied only
	// when its key's alerts never took it, and never opening or changing an alert's state.
	Replay bool `json:"replay,omitempty"`
}

func (r routed) marshal() []byte {
	b, _ := json.Marshal(r)
	return b
}

// routedBatch is what the router publishes to a partition: the partition's events of a
// batch of EVENTS messages, in EVENTS order.
type routedBatch struct {
	Events []routed `json:"events"`
}

// partitionMsg decodes a partition message: a routedBatch, or one routed event of an
// earlier router.
func partitionMsg(data []byte) (routedBatch, error) {
	var m struct {
		routed
		routedBatch
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return routedBatch{}, err
	}
	if len(m.Events) == 0 && m.Key != "" {
		return routedBatch{Events: []routed{m.routed}}, nil
	}
	if len(m.Events) == 0 {
		return routedBatch{}, errors.New("no events")
	}
	for i, r := range m.Events {
		if r.Event == nil || r.Key == "" {
			return routedBatch{}, fmt.Errorf("event %d has no event or no key", i)
		}
	}
	return m.routedBatch, nil
}

// ensurePartitions creates the partition stream and one durable consumer per partition.
// Changing the partition count of a running system re-partitions new events only: the
// consumers of partitions beyond the new count are left to drain by hand (documented).
func ensurePartitions(ctx context.Context, js jetstream.JetStream, n int) error {
	cfg := bus.Stream(StreamPartitions) // the stores table (libs/bus/stores.go)
	cfg.Subjects, cfg.Duplicates = []string{partitionSubject + ">"}, partitionDupWindow
	_, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return fmt.Errorf("correlation: stream %s: %w", StreamPartitions, err)
	}
	for p := range n {
		_, err := js.CreateOrUpdateConsumer(ctx, StreamPartitions, jetstream.ConsumerConfig{Durable: partitionConsumer(p),
			Description:   fmt.Sprintf("correlation: partition %d, read by its lease holder", p),
			FilterSubject: partitionSubjectOf(p), AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
			MaxDeliver: -1, MaxAckPending: 20_000})
		if err != nil {
			return fmt.Errorf("correlation: consumer %s: %w", partitionConsumer(p), err)
		}
	}
	return nil
}
