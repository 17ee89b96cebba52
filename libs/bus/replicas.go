package bus

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// WithReplicas returns js with every stream, key-value bucket and object store it creates or
// updates asking for n replicas when its configuration says 1 or nothing.
//
// Services create their own buckets and streams (their code says what they need, not where
// they run); how many copies the server keeps is the deployment's choice: 1 on the embedded
// hub, 3 on a cluster (deployments/nats/cluster), where a message must survive the loss of a
// node. A configuration that names more than one replica keeps its own choice. Consumers
// inherit their stream's replicas.
func WithReplicas(js jetstream.JetStream, n int) jetstream.JetStream {
	if n <= 1 {
		return js
	}
	return replicated{JetStream: js, n: n}
}

type replicated struct {
	jetstream.JetStream
	n int
}

func (r replicated) replicas(v int) int {
	if v <= 1 {
		return r.n
	}
	return v
}

func (r replicated) CreateStream(ctx context.Context, c jetstream.StreamConfig) (jetstream.Stream, error) {
	c.Replicas = r.replicas(c.Replicas)
	return r.JetStream.CreateStream(ctx, c)
}

func (r replicated) CreateOrUpdateStream(ctx context.Context, c jetstream.StreamConfig) (jetstream.Stream, error) {
	c.Replicas = r.replicas(c.Replicas)
	return r.JetStream.CreateOrUpdateStream(ctx, c)
}

func (r replicated) UpdateStream(ctx context.Context, c jetstream.StreamConfig) (jetstream.Stream, error) {
	c.Replicas = r.replicas(c.Replicas)
	return r.JetStream.UpdateStream(ctx, c)
}

func (r replicated) CreateKeyValue(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	c.Replicas = r.replicas(c.Replicas)
	return r.JetStream.CreateKeyValue(ctx, c)
}

func (r replicated) CreateOrUpdateKeyValue(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	c.Replicas = r.replicas(c.Replicas)
	return r.JetStream.CreateOrUpdateKeyValue(ctx, c)
}

func (r replicated) UpdateKeyValue(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	c.Replicas = r.replicas(c.Replicas)
	return r.JetStream.UpdateKeyValue(ctx, c)
}

func (r replicated) CreateObjectStore(ctx context.Context, c jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	c.Replicas = r.replicas(c.Replicas)
	return r.JetStream.CreateObjectStore(ctx, c)
}

func (r replicated) CreateOrUpdateObjectStore(ctx context.Context, c jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	c.Replicas = r.replicas(c.Replicas)
	return r.JetStream.CreateOrUpdateObjectStore(ctx, c)
}

func (r replicated) UpdateObjectStore(ctx context.Context, c jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	c.Replicas = r.replicas(c.Replicas)
	return r.JetStream.UpdateObjectStore(ctx, c)
}
