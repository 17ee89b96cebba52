package cmdb

import (
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// IngestSubject is the subject a producer publishes a CI payload on (libs/bus keeps the
// function, so that producers need not import this service).
func IngestSubject(payload envelope.CIPayload, partitions int) string {
	return bus.CMDBIngestSubjectFor(payload, partitions)
}

// Partition maps a payload to one of n partitions (bus.CMDBPartition).
func Partition(payload envelope.CIPayload, n int) int { return bus.CMDBPartition(payload, n) }

// PartitionKey is the identity a payload is partitioned by (bus.CMDBPartitionKey).
func PartitionKey(payload envelope.CIPayload) string { return bus.CMDBPartitionKey(payload) }
