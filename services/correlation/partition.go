package correlation

import (
	"context"
	"encoding/json"
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
// The partition stream has interest retention: an event stays until its partition's
// durable consumer acknowledges it, however long no replica runs — nothing is lost between
// the router and the owner. The router publishes with Nats-Msg-Id "e<EVENTS seq>", so a
// router that dies after publishing and before acknowledging republishes into the stream's
// duplicate window and nothing is doubled.
const (
	// StreamPartitions is the service's own stream between router and partition owners.
	StreamPartitions = "CORR_PARTITIONS"
	partitionSubject = "corr.part."
)

// partitionDupWindow outlasts the router's AckWait: a redelivered event is still a duplicate.
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

// routed is an event as the router hands it to its partition: normalized, keyed, with the
// EVENTS sequence it came from (for the dead-letter reference and logs).
type routed struct {
	EventSeq uint64          `json:"event_seq"`
	Key      string          `json:"key"`
	Event    *envelope.Event `json:"event"`
	// Threshold is the event rule's threshold, applied by the partition (it counts).
	Threshold *Threshold `json:"threshold,omitempty"`
}

func (r routed) marshal() []byte {
	b, _ := json.Marshal(r)
	return b
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
