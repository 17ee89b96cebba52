package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream, KV and subject names of DESIGN.md §2. Subjects are built by the helpers below so
// that no service spells a subject by hand.
const (
	StreamProbes  = "PROBES"
	StreamResults = "RESULTS"
	StreamEvents  = "EVENTS"
	StreamCMDB    = "CMDB"
	StreamChanges = "CHANGES"
	StreamImports = "IMPORTS"
	StreamDLQ     = "DLQ"

	KVAgents     = "agents"
	KVSites      = "sites"
	KVRuns       = "runs"
	KVLeases     = "leases"
	KVTokens     = "tokens"
	KVHeartbeats = "heartbeats"
	KVSessions   = "sessions"

	// SessionTTL is how long a console sign-in lasts: the sessions bucket forgets it then,
	// and the cookie's Max-Age says the same.
	SessionTTL = 12 * time.Hour

	// HeartbeatTTL: a bridge beats every 10 s; three missed beats and its key expires, which
	// is how the registry tells "down".
	HeartbeatTTL = 30 * time.Second
)

// Limits are the retention settings an operator tunes; zero values take the defaults.
type Limits struct {
	Replicas        int           // 1 embedded, 3 on a cluster
	ResultsMaxAge   time.Duration // replay window (default 7 days)
	ResultsMaxBytes int64         // default 3 GiB
	// ResultsPerSender caps the results kept per result.<app>.<site>.<kind>.<agent> subject
	// (oldest of that subject evicted first): one bridge flooding the hub replaces its own
	// results, not another site's. Default 2,000,000.
	ResultsPerSender int64
	EventsMaxAge     time.Duration // default 7 days
	EventsMaxBytes   int64         // default 1 GiB
	ChangesMaxAge    time.Duration // default 30 days
	ChangesMaxBytes  int64         // default 1 GiB
	ImportsMaxAge    time.Duration // default 7 days
	ImportsMaxBytes  int64         // default 2 GiB
	CMDBMaxBytes     int64         // default 1 GiB: payloads waiting for the CMDB
	DLQMaxAge        time.Duration // default 30 days: poison messages wait for a human
	DLQMaxBytes      int64         // default 1 GiB
	// DLQPerOrigin is the per-origin quota of dead letters (per dlq.<service>.<origin>
	// subject, oldest evicted first): default 10,000.
	DLQPerOrigin   int64
	ProbesMaxBytes int64 // default 1 GiB
	// ProbesMaxConsumers caps PROBES' consumers (default 100,000). nats-server 2.11+ allows
	// 1,000 consumers per stream unless the stream says otherwise (-1 does not count), and
	// every site has one per priority, capability and lane (162): the 7th site could not
	// enroll (measured by BenchmarkSites, services/outpost/e2e).
	ProbesMaxConsumers int
	Duplicates         time.Duration // dedup window for Nats-Msg-Id (default 2 min)
}

// DefaultLimits are what `outpost up` runs with.
func DefaultLimits() Limits {
	return Limits{
		Replicas:           1,
		ResultsMaxAge:      7 * 24 * time.Hour,
		ResultsMaxBytes:    3 << 30,
		ResultsPerSender:   2_000_000,
		EventsMaxAge:       7 * 24 * time.Hour,
		EventsMaxBytes:     1 << 30,
		ChangesMaxAge:      30 * 24 * time.Hour,
		ChangesMaxBytes:    1 << 30,
		ImportsMaxAge:      7 * 24 * time.Hour,
		ImportsMaxBytes:    2 << 30,
		CMDBMaxBytes:       1 << 30,
		DLQMaxAge:          30 * 24 * time.Hour,
		DLQMaxBytes:        1 << 30,
		DLQPerOrigin:       10_000,
		ProbesMaxBytes:     1 << 30,
		ProbesMaxConsumers: 100_000,
		Duplicates:         2 * time.Minute,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	pick := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	pickN := func(v *int64, def int64) {
		if *v == 0 {
			*v = def
		}
	}
	if l.Replicas == 0 {
		l.Replicas = d.Replicas
	}
	pick(&l.ResultsMaxAge, d.ResultsMaxAge)
	pick(&l.EventsMaxAge, d.EventsMaxAge)
	pick(&l.ChangesMaxAge, d.ChangesMaxAge)
	pick(&l.ImportsMaxAge, d.ImportsMaxAge)
	pick(&l.DLQMaxAge, d.DLQMaxAge)
	pick(&l.Duplicates, d.Duplicates)
	pickN(&l.ResultsMaxBytes, d.ResultsMaxBytes)
	pickN(&l.EventsMaxBytes, d.EventsMaxBytes)
	pickN(&l.DLQMaxBytes, d.DLQMaxBytes)
	pickN(&l.DLQPerOrigin, d.DLQPerOrigin)
	pickN(&l.ResultsPerSender, d.ResultsPerSender)
	pickN(&l.ProbesMaxBytes, d.ProbesMaxBytes)
	if l.ProbesMaxConsumers == 0 {
		l.ProbesMaxConsumers = d.ProbesMaxConsumers
	}
	pickN(&l.ChangesMaxBytes, d.ChangesMaxBytes)
	pickN(&l.ImportsMaxBytes, d.ImportsMaxBytes)
	pickN(&l.CMDBMaxBytes, d.CMDBMaxBytes)
	return l
}

const defaultMaxDeliver = 5

// ConsumerSpec is a durable pull consumer. Every replica of a service binds the same one.
type ConsumerSpec struct {
	Stream     string
	Name       string // durable name; also the watermill "topic" a Router handler subscribes to
	Filters    []string
	AckWait    time.Duration // default 30 s
	MaxDeliver int           // default 5; then the message is dead-lettered
	// MaxAckPending bounds unacknowledged messages across all replicas (default 1,000).
	MaxAckPending int
	Description   string
	// MaxWork bounds how long a handler may keep one message alive with InProgress (default
	// 10 min, at least one AckWait): a handler still running then is taken to be hung — the
	// message is nacked for a redelivery (and dead-lettered once its deliveries run out),
	// its slot freed, and the hang logged and counted (subscriber.go).
	MaxWork time.Duration
}

// DefaultMaxWork is a handler's time on one message before it is taken to be hung.
const DefaultMaxWork = 10 * time.Minute

// maxWork is MaxWork with its default, never under one AckWait.
func (c ConsumerSpec) maxWork() time.Duration {
	d := c.MaxWork
	if d == 0 {
		d = DefaultMaxWork
	}
	return max(d, c.Config().AckWait)
}

// Config is the JetStream configuration of the consumer, defaults applied.
func (c ConsumerSpec) Config() jetstream.ConsumerConfig {
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = defaultMaxDeliver
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 1000
	}
	cc := jetstream.ConsumerConfig{
		Durable:       c.Name,
		Description:   c.Description,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if len(c.Filters) == 1 {
		cc.FilterSubject = c.Filters[0]
	} else {
		cc.FilterSubjects = c.Filters
	}
	return cc
}

func (c ConsumerSpec) maxDeliver() string {
	if c.MaxDeliver == 0 {
		return strconv.Itoa(defaultMaxDeliver)
	}
	return strconv.Itoa(c.MaxDeliver)
}

// KVSpec is a key/value bucket.
type KVSpec struct {
	Bucket      string
	Description string
	TTL         time.Duration // max age of a value (agents: heartbeat TTL)
	History     uint8
	// LimitMarkerTTL enables per-key TTLs (used by leases).
	LimitMarkerTTL time.Duration
	MaxBytes       int64
	Replicas       int
}

// Topology is the one declarative table of what the bus holds. Provision makes the server
// match it; it is idempotent and safe to run from every replica at every start.
type Topology struct {
	Streams   []jetstream.StreamConfig
	KV        []KVSpec
	Consumers []ConsumerSpec
}

// DefaultTopology is DESIGN.md §2 as data: the table's stores owned by "bus" (stores.go).
// Services add their consumers with WithConsumers.
func DefaultTopology(l Limits) Topology {
	l = l.withDefaults()
	var t Topology
	for _, st := range Stores(l) {
		if st.Owner != "bus" {
			continue
		}
		switch st.Kind {
		case KindStream:
			c := st.StreamConfig(l.Replicas)
			if c.Duplicates == 0 { // the table's own window (RESULTS) wins over the default
				c.Duplicates = l.Duplicates
			}
			t.Streams = append(t.Streams, c)
		case KindKV:
			t.KV = append(t.KV, KVSpec{Bucket: st.Name, Description: st.Description, TTL: st.MaxAge, History: st.History,
				LimitMarkerTTL: st.LimitMarkerTTL, MaxBytes: st.MaxBytes, Replicas: l.Replicas})
		}
	}
	return t
}

// WithConsumers returns the topology plus the given consumers.
func (t Topology) WithConsumers(cs ...ConsumerSpec) Topology {
	t.Consumers = append(append([]ConsumerSpec(nil), t.Consumers...), cs...)
	return t
}

// Consumer looks a consumer up by durable name.
func (t Topology) Consumer(name string) (ConsumerSpec, bool) {
	for _, c := range t.Consumers {
		if c.Name == name {
			return c, true
		}
	}
	return ConsumerSpec{}, false
}

// Provision creates or updates every stream, bucket and consumer of the topology.
func Provision(ctx context.Context, js jetstream.JetStream, t Topology) error {
	var errs []error
	for _, sc := range t.Streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", sc.Name, err))
		}
	}
	for _, kv := range t.KV {
		cfg := jetstream.KeyValueConfig{Bucket: kv.Bucket, Description: kv.Description, TTL: kv.TTL,
			History: kv.History, Storage: jetstream.FileStorage, LimitMarkerTTL: kv.LimitMarkerTTL,
			MaxBytes: kv.MaxBytes, Replicas: max(kv.Replicas, 1)}
		if cfg.MaxBytes == 0 {
			cfg.MaxBytes = -1
		}
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			errs = append(errs, fmt.Errorf("kv %s: %w", kv.Bucket, err))
		}
	}
	for _, c := range t.Consumers {
		if _, err := js.CreateOrUpdateConsumer(ctx, c.Stream, c.Config()); err != nil {
			errs = append(errs, fmt.Errorf("consumer %s on %s: %w", c.Name, c.Stream, err))
		}
	}
	return errors.Join(errs...)
}

// Subject helpers: the one place subjects are spelled.

// ProbeSubject is probe.<site>.<priority>.<capability>.<lane>; the lane is the probe's
// application's (ProbeLane), so bridges dedicated to some applications pull only theirs.
func ProbeSubject(site, priority, capability, lane string) string {
	return "probe." + site + "." + priority + "." + capability + "." + lane
}

// ResultSubject is result.<app>.<site>.<kind>.<agent>. The agent is in the subject so that NATS
// itself enforces who may send what: a bridge's permissions allow only
// result.*.<its site>.*.<its name>, and the hub checks the body against the subject (Origin).
func ResultSubject(app, site, kind, agent string) string {
	return "result." + app + "." + site + "." + kind + "." + agent
}

// EventSubject is event.<site>.<source>.
func EventSubject(site, source string) string { return "event." + site + "." + source }

// CMDBIngestSubject is cmdb.ingest.<partition>.
func CMDBIngestSubject(partition int) string { return fmt.Sprintf("cmdb.ingest.%d", partition) }

// ChangeSubject is cmdb.changed.<class>.
func ChangeSubject(class string) string { return "cmdb.changed." + class }

// IngestedSubject is cmdb.ingested.<source>: the CMDB's receipt for each payload of a source.
func IngestedSubject(source string) string { return "cmdb.ingested." + source }

// DLQSubject is dlq.<service>, the prefix of a service's dead letters (DLQOriginSubject).
func DLQSubject(service string) string { return "dlq." + service }

// OriginHub is the origin of messages the hub made itself.
const OriginHub = "hub"

// DLQOriginSubject is dlq.<service>.<origin>, where a service's dead letters of one origin
// go: the site a message came from, or "hub". The DLQ keeps at most Limits.DLQPerOrigin
// messages per subject and evicts the oldest of that subject first, so a site flooding the
// hub with bad messages only ever evicts its own dead letters.
func DLQOriginSubject(service, origin string) string { return DLQSubject(service) + "." + origin }

// Origin is the site a message on subject came from: result.<app>.<site>.…, event.<site>.…,
// probe.<site>.…, dlq.bridge.<site>; anything else (and event.hub.…) is the hub's own.
func Origin(subject string) string {
	t := strings.SplitN(subject, ".", 4)
	switch {
	case len(t) >= 3 && (t[0] == "result" || (t[0] == "dlq" && t[1] == "bridge")):
		return t[2]
	case len(t) >= 2 && (t[0] == "event" || t[0] == "probe"):
		return t[1]
	}
	return OriginHub
}

// ServiceSubject is svc.<service>.<op>.
func ServiceSubject(service, op string) string { return "svc." + service + "." + op }

// HeartbeatSubject is agent.heartbeat.<site>.<id>.
func HeartbeatSubject(site, agent string) string { return "agent.heartbeat." + site + "." + agent }

// ValidName reports whether s can be a site or agent name: it becomes a subject token and
// part of consumer names, so only [a-z0-9-], 1..64, starting with a letter or digit.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// InboxPrefix is an agent's private inbox prefix (its NKey public key makes it unique): NATS
// permissions let each agent read its own replies and no one else's.
func InboxPrefix(nkey string) string { return "_INBOX_" + nkey }

// BridgeDLQSubject is where a bridge dead-letters work it cannot read.
func BridgeDLQSubject(site string) string { return "dlq.bridge." + site }

// ControlSubject is agent.ctl.<site>.<id>: under its own second token so that it can never
// overlap agent.heartbeat.> (the hub imports one from BRIDGES and exports the other to it;
// overlapping service imports and exports form a cycle NATS refuses).
func ControlSubject(site, agent string) string { return "agent.ctl." + site + "." + agent }
