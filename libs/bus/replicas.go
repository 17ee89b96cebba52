package bus

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
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
//
// On a cluster, two replicas of a service that start together create the same streams and
// buckets at once, and nats-server (2.15.2, measured with scripts/cluster.sh) then sometimes
// creates the stream but never answers either request. So every create or update here waits
// at most clusterCallTimeout and is tried again (its second try finds the stream and
// updates it, which concurrent replicas do without trouble).
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
	return retryHung(ctx, func(ctx context.Context) (jetstream.Stream, error) { return r.JetStream.CreateStream(ctx, c) })
}

func (r replicated) CreateOrUpdateStream(ctx context.Context, c jetstream.StreamConfig) (jetstream.Stream, error) {
	c.Replicas = r.replicas(c.Replicas)
	return retryHung(ctx, func(ctx context.Context) (jetstream.Stream, error) { return r.JetStream.CreateOrUpdateStream(ctx, c) })
}

func (r replicated) UpdateStream(ctx context.Context, c jetstream.StreamConfig) (jetstream.Stream, error) {
	c.Replicas = r.replicas(c.Replicas)
	return retryHung(ctx, func(ctx context.Context) (jetstream.Stream, error) { return r.JetStream.UpdateStream(ctx, c) })
}

func (r replicated) CreateKeyValue(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	c.Replicas = r.replicas(c.Replicas)
	if _, err := retryHung(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return r.JetStream.CreateKeyValue(ctx, c) }); err != nil {
		return nil, err
	}
	return r.leaderReads(ctx, c.Bucket)
}

func (r replicated) CreateOrUpdateKeyValue(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	c.Replicas = r.replicas(c.Replicas)
	if _, err := retryHung(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		return r.JetStream.CreateOrUpdateKeyValue(ctx, c)
	}); err != nil {
		return nil, err
	}
	return r.leaderReads(ctx, c.Bucket)
}

func (r replicated) UpdateKeyValue(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	c.Replicas = r.replicas(c.Replicas)
	if _, err := retryHung(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return r.JetStream.UpdateKeyValue(ctx, c) }); err != nil {
		return nil, err
	}
	return r.leaderReads(ctx, c.Bucket)
}

func (r replicated) CreateObjectStore(ctx context.Context, c jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	c.Replicas = r.replicas(c.Replicas)
	return retryHung(ctx, func(ctx context.Context) (jetstream.ObjectStore, error) { return r.JetStream.CreateObjectStore(ctx, c) })
}

func (r replicated) CreateOrUpdateObjectStore(ctx context.Context, c jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	c.Replicas = r.replicas(c.Replicas)
	return retryHung(ctx, func(ctx context.Context) (jetstream.ObjectStore, error) {
		return r.JetStream.CreateOrUpdateObjectStore(ctx, c)
	})
}

func (r replicated) UpdateObjectStore(ctx context.Context, c jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	c.Replicas = r.replicas(c.Replicas)
	return retryHung(ctx, func(ctx context.Context) (jetstream.ObjectStore, error) { return r.JetStream.UpdateObjectStore(ctx, c) })
}

func (r replicated) CreateOrUpdateConsumer(ctx context.Context, stream string, c jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return retryHung(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return r.JetStream.CreateOrUpdateConsumer(ctx, stream, c)
	})
}

// clusterCallTimeout bounds one try of a create or update on a cluster (a healthy one
// answers in well under 200 ms).
const clusterCallTimeout = 3 * time.Second

// retryHung calls f with a bounded context and tries again, up to 6 times, when a try timed
// out; "already exists" answers of a create that was applied without an answer are the
// caller's to read (CreateOrUpdate* need not).
func retryHung[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, clusterCallTimeout)
		v, err := f(cctx)
		cancel()
		hung := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if err == nil || !hung || ctx.Err() != nil || attempt == 6 {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(time.Duration(100+rand.IntN(400)) * time.Millisecond): // apart from the sibling that raced us
		}
	}
}

// leaderReads turns off direct gets on a bucket and binds it again. With direct gets (what
// nats.go asks for) any replica of an R3 bucket answers a Get, a follower possibly before it
// has the latest write: a service that wrote a key and read it back (agents: a site, then
// its enrollment token) was told it does not exist. Without them the stream leader answers,
// after every write it acknowledged. A process that binds the bucket while a sibling's
// CreateOrUpdate has just turned direct gets back on keeps them until it binds again.
func (r replicated) leaderReads(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	st, err := r.JetStream.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, err
	}
	if cfg := st.CachedInfo().Config; cfg.AllowDirect {
		cfg.AllowDirect = false
		if _, err := retryHung(ctx, func(ctx context.Context) (jetstream.Stream, error) { return r.JetStream.UpdateStream(ctx, cfg) }); err != nil {
			return nil, err
		}
	}
	return r.JetStream.KeyValue(ctx, bucket)
}

// KeyValue binds a bucket with leader reads (leaderReads) even if a sibling left it with
// direct gets.
func (r replicated) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	st, err := r.JetStream.Stream(ctx, "KV_"+bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, jetstream.ErrBucketNotFound
		}
		return nil, err
	}
	if st.CachedInfo().Config.AllowDirect {
		return r.leaderReads(ctx, bucket)
	}
	return r.JetStream.KeyValue(ctx, bucket)
}
