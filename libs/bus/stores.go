package bus

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StoreKind is what JetStream keeps a store as.
type StoreKind string

const (
	KindStream StoreKind = "stream"
	KindKV     StoreKind = "kv"
	KindObject StoreKind = "object"
)

// Store is one line of the table of everything the hub keeps in JetStream: each stream, KV
// bucket and object store, with its limits and the discard policy chosen for it, and why.
// Every store has a byte limit: they all share the hub's one JetStream store, so one that
// could grow without end (a backlog nobody drains, a bucket nobody prunes) would in the end
// fail every other write. Code creates stores from this table (Stream, KV, ObjectStore), and
// docs/architecture.md lists it; the hub's test checks that every store on a running hub is
// in it.
type Store struct {
	Kind        StoreKind
	Name        string // stream name, or the bucket's (JetStream's stream is KV_<name> / OBJ_<name>)
	Owner       string // the service that creates it (or "bus": the hub's topology)
	Description string
	MaxBytes    int64
	MaxMsgs     int64         // 0: no limit on the count (the bytes bound it)
	MaxAge      time.Duration // 0: kept until removed (KV: a value's TTL)
	// Discard at a limit: DiscardNew refuses the write (the writer sees an error and keeps or
	// retries its data), DiscardOld evicts the oldest. KV buckets and object stores always
	// refuse (nats.go creates them DiscardNew): state must not vanish.
	Discard jetstream.DiscardPolicy
	Why     string

	// Streams only.
	Subjects          []string
	Retention         jetstream.RetentionPolicy
	MaxMsgsPerSubject int64
	MaxMsgSize        int32
	Duplicates        time.Duration
	AllowMsgTTL       bool
	MaxConsumers      int // 0: the server's default (1,000 per stream on nats-server 2.11+)
	// KV only.
	History        uint8
	LimitMarkerTTL time.Duration
}

const (
	kib = int64(1) << 10
	mib = kib << 10
	gib = mib << 10
	day = 24 * time.Hour
)

// Stores is the table, for the given limits (the hub's; services that are not given the
// hub's limits read DefaultLimits through Stream/KV/ObjectStore).
func Stores(l Limits) []Store {
	l = l.withDefaults()
	old, refuse := jetstream.DiscardOld, jetstream.DiscardNew
	return []Store{
		// streams of the hub's topology (DESIGN.md §2)
		{Kind: KindStream, Name: StreamProbes, Owner: "bus", Description: "probes for bridges: probe.<site>.<priority>.<capability>.<lane>",
			Subjects: []string{"probe.>"}, Retention: jetstream.WorkQueuePolicy, MaxBytes: l.ProbesMaxBytes, AllowMsgTTL: true,
			MaxConsumers: l.ProbesMaxConsumers,
			Discard:      refuse, Why: "work not yet taken by a bridge must never vanish: a full queue refuses the publish, the sender holds its probes back and retries"},
		{Kind: KindStream, Name: StreamResults, Owner: "bus", Description: "probe results, kept for replay: result.<app>.<site>.<kind>.<agent>",
			Subjects: []string{"result.>"}, Retention: jetstream.LimitsPolicy, MaxAge: l.ResultsMaxAge, MaxBytes: l.ResultsMaxBytes,
			MaxMsgsPerSubject: l.ResultsPerSender,
			// A result whose publish ack was lost as a WAN link went down is sent again when the
			// link is back: the copy is dropped by its Nats-Msg-Id only within this window, so it
			// outlasts the outages the bridge's outbox rides out most often (the WAN cut test cuts
			// for 2 minutes: with the default 2-minute window, a result stored just before the
			// cut was stored again after it). Its memory is one entry per result of the window.
			Duplicates: 10 * time.Minute,
			Discard:    old, Why: "a replay window: the consumers have read the oldest long ago; a bridge must never be refused its results (its outbox would fill)"},
		{Kind: KindStream, Name: StreamEvents, Owner: "bus", Description: "raw events: event.<site>.<source>",
			Subjects: []string{"event.>"}, Retention: jetstream.LimitsPolicy, MaxAge: l.EventsMaxAge, MaxBytes: l.EventsMaxBytes,
			Discard: old, Why: "a window of raw events; refusing would silence the warnings about the hub itself (event.hub.…)"},
		{Kind: KindStream, Name: StreamCMDB, Owner: "bus", Description: "CI payloads to reconcile: cmdb.ingest.<partition>",
			Subjects: []string{"cmdb.ingest.>"}, Retention: jetstream.WorkQueuePolicy, MaxBytes: l.CMDBMaxBytes,
			Discard: refuse, Why: "payloads not yet in the CMDB must not vanish: a full queue refuses, discovery and imports hold their payloads and retry"},
		{Kind: KindStream, Name: StreamChanges, Owner: "bus", Description: "CMDB changes: cmdb.changed.<class>; ingest receipts: cmdb.ingested.<source>",
			Subjects: []string{"cmdb.changed.>", "cmdb.ingested.>"}, Retention: jetstream.LimitsPolicy, MaxAge: l.ChangesMaxAge, MaxBytes: l.ChangesMaxBytes,
			Discard: old, Why: "a history read by triggers and receipt counters; refusing would fail CMDB commits' outbox drain"},
		{Kind: KindStream, Name: StreamImports, Owner: "bus", Description: "import rows: import.<set>.rows",
			Subjects: []string{"import.>"}, Retention: jetstream.LimitsPolicy, MaxAge: l.ImportsMaxAge, MaxBytes: l.ImportsMaxBytes,
			Discard: refuse, Why: "rows not yet transformed must not vanish: a full stream refuses, the import run pauses with the error"},
		{Kind: KindStream, Name: StreamDLQ, Owner: "bus", Description: "poison messages with their reason: dlq.<service>.<origin>",
			Subjects: []string{"dlq.>"}, Retention: jetstream.LimitsPolicy, MaxAge: l.DLQMaxAge, MaxBytes: l.DLQMaxBytes,
			MaxMsgsPerSubject: l.DLQPerOrigin,
			Discard:           old, Why: "a dead letter must always be written (else the message it stands for is lost); the DLQ service warns at 80 % before it evicts"},

		// KV buckets of the hub's topology
		{Kind: KindKV, Name: KVAgents, Owner: "bus", Description: "agent registry", History: 1, MaxBytes: 64 * mib,
			Discard: refuse, Why: "one key per bridge"},
		{Kind: KindKV, Name: KVSites, Owner: "bus", Description: "sites and their ranges", History: 5, MaxBytes: 16 * mib,
			Discard: refuse, Why: "one key per site, a few versions"},
		{Kind: KindKV, Name: KVRuns, Owner: "bus", Description: "run progress: discovery run records (their pending probes live in discovery_pending)", History: 1, MaxBytes: 256 * mib,
			Discard: refuse, Why: "pruned by discovery's retention (default 30 days after a run ends)"},
		{Kind: KindKV, Name: KVLeases, Owner: "bus", Description: "scheduler leases", History: 1, LimitMarkerTTL: time.Second, MaxBytes: 16 * mib,
			Discard: refuse, Why: "keys expire with their TTL"},
		{Kind: KindKV, Name: KVTokens, Owner: "bus", Description: "API tokens (hashed)", History: 1, MaxBytes: 16 * mib,
			Discard: refuse, Why: "one key per token"},
		{Kind: KindKV, Name: KVSessions, Owner: "bus", Description: "console sign-ins: session id hash to token hash; shared by gateway replicas", History: 1, MaxAge: SessionTTL, MaxBytes: 64 * mib,
			Discard: refuse, Why: "keys expire after SessionTTL"},
		{Kind: KindKV, Name: KVHeartbeats, Owner: "bus", Description: "last heartbeat of each agent; expires after 3 missed beats", History: 1, MaxAge: HeartbeatTTL, MaxBytes: 16 * mib,
			Discard: refuse, Why: "keys expire after HeartbeatTTL"},

		// discovery
		{Kind: KindKV, Name: "discovery_hosts", Owner: "discovery", Description: "discovery: hosts of runs (facts, per-host log)", History: 1, MaxBytes: 512 * mib,
			Discard: refuse, Why: "one key per live host of a run; pruned with its run by the retention"},
		{Kind: KindKV, Name: "discovery_pending", Owner: "discovery", Description: "discovery: pending probes of active runs, by host, scan chunk or /24 of the sweep", History: 1, MaxBytes: 256 * mib,
			Discard: refuse, Why: "written ahead of every probe: refusing holds the probes back (never sent unrecorded); deleted when a run ends"},
		{Kind: KindKV, Name: "credential_affinity", Owner: "discovery", Description: "discovery: credential that worked per site, type and address", History: 1, MaxBytes: 64 * mib,
			Discard: refuse, Why: "one key per (site, type, address)"},
		{Kind: KindKV, Name: "discovery_schedules", Owner: "discovery", Description: "discovery schedules", History: 1, MaxBytes: 16 * mib,
			Discard: refuse, Why: "one key per schedule"},
		{Kind: KindKV, Name: "discovery_host_keys", Owner: "discovery", Description: "discovery: SSH host keys first seen per site and address (trust on first use)", History: 1, MaxBytes: 64 * mib,
			Discard: refuse, Why: "one key per (site, address); never evicted: a forgotten key would be trusted anew"},
		{Kind: KindKV, Name: "credentials", Owner: "discovery", Description: "target credentials, AES-GCM encrypted", History: 1, MaxBytes: 16 * mib,
			Discard: refuse, Why: "one key per credential"},
		{Kind: KindStream, Name: "DISCOVERY_PROBES", Owner: "discovery", Description: "discovery: what each published probe asked (probe id and key), to replay runs from RESULTS",
			Subjects: []string{"discovery.ledger.>"}, Retention: jetstream.LimitsPolicy, MaxAge: 7 * day, MaxBytes: 512 * mib,
			Discard: old, Why: "the probe ledger, a replay window like RESULTS (kept as long): refusing would fail probes' publication; an evicted entry only makes that probe not_replayed"},

		// orchestration
		{Kind: KindStream, Name: "WORKFLOW_RUNS", Owner: "orchestration", Description: "workflow runs: each run's history of events (wf.run.<run>.events)",
			Subjects: []string{"wf.run.*.events"}, Retention: jetstream.LimitsPolicy, MaxAge: 30 * day, MaxBytes: 2 * gib, MaxMsgSize: 1 << 20, Duplicates: 2 * time.Minute,
			Discard: old, Why: "histories past their retention (orchestration's HistoryMaxAge/MaxBytes, which override these) are dropped oldest first; a run past it answers 410 Gone"},
		{Kind: KindObject, Name: "workflow_outputs", Owner: "orchestration", Description: "workflow step outputs too large to keep in a run",
			MaxAge: 30 * day, MaxBytes: 2 * gib, Discard: refuse, Why: "expire with the histories (HistoryMaxAge)"},
		{Kind: KindKV, Name: "workflows", Owner: "orchestration", Description: "workflow definitions, every version", History: 1, MaxBytes: 64 * mib,
			Discard: refuse, Why: "one key per definition version"},
		{Kind: KindKV, Name: "workflow_runs", Owner: "orchestration", Description: "workflow runs: the whole state of each", History: 1, MaxBytes: 512 * mib,
			Discard: refuse, Why: "one key per run"},
		{Kind: KindKV, Name: "workflow_run_keys", Owner: "orchestration", Description: "run_start idempotency keys → run id", History: 1, MaxAge: 7 * day, MaxBytes: 64 * mib,
			Discard: refuse, Why: "keys expire after orchestration's IdempotencyTTL (which overrides the age)"},

		// correlation
		{Kind: KindStream, Name: "CORR_PARTITIONS", Owner: "correlation", Description: "correlation: normalized events by partition, from the router to the partition owner",
			Subjects: []string{"corr.part.>"}, Retention: jetstream.InterestPolicy, Duplicates: 5 * time.Minute, MaxBytes: 512 * mib,
			Discard: refuse, Why: "events not yet correlated must not vanish: a full stream refuses, the router's event is redelivered"},
		{Kind: KindKV, Name: "correlation_alerts", Owner: "correlation", Description: "correlation: alerts by dedup key slot (a.<slot>) and closed alerts (c.<id>)", History: 1, MaxBytes: 512 * mib,
			Discard: refuse, Why: "open alerts, and closed ones until pruned by correlation"},
		{Kind: KindKV, Name: "correlation_silences", Owner: "correlation", Description: "correlation: silences by id", History: 1, MaxBytes: 16 * mib,
			Discard: refuse, Why: "one key per silence"},
		{Kind: KindKV, Name: "correlation_notifications", Owner: "correlation", Description: "correlation: the notification log (last notification per notifier and group)", History: 1, MaxBytes: 64 * mib,
			Discard: refuse, Why: "one key per (notifier, group)"},
		{Kind: KindKV, Name: "correlation_topology", Owner: "correlation", Description: "correlation: topology groups (alerts on related CIs) by id", History: 1, MaxBytes: 64 * mib,
			Discard: refuse, Why: "one key per group of open alerts; recomputed from the alerts by the lease holder"},
		{Kind: KindStream, Name: "CORR_APPLIED", Owner: "correlation", Description: "correlation: EVENTS sequences alerts took, moved out of the alerts (corr.applied.<slot>), for replay",
			Subjects: []string{"corr.applied.>"}, Retention: jetstream.LimitsPolicy, MaxAge: l.EventsMaxAge, MaxBytes: 256 * mib,
			Discard: old, Why: "kept as long as EVENTS (a range older than its events answers nothing); ranges are small (a message holds 128), so the limit is reached only by millions of scattered keys — then the oldest ranges go, and a replay of their events could count them again"},
		{Kind: KindStream, Name: "METRICS", Owner: "correlation", Description: "correlation: metric samples collected through the sites' bridges: metric.<site>.<metric>",
			Subjects: []string{"metric.>"}, Retention: jetstream.LimitsPolicy, Duplicates: 2 * time.Minute, MaxAge: 7 * day, MaxBytes: 512 * mib,
			Discard: old, Why: "a window of samples already folded into the baselines; refusing would stop collection (correlation's metrics MaxAge/MaxBytes override these)"},
		{Kind: KindKV, Name: "correlation_metric_defs", Owner: "correlation", Description: "correlation: metric collection definitions by name", History: 1, MaxBytes: 16 * mib,
			Discard: refuse, Why: "one key per definition"},
		{Kind: KindKV, Name: "correlation_series", Owner: "correlation", Description: "correlation: metric series baselines (EWMA, hour-of-week bands) and last samples", History: 1, MaxBytes: 256 * mib,
			Discard: refuse, Why: "one key per series (metric × target); a refused write keeps the sample for redelivery"},
		{Kind: KindKV, Name: "correlation_connectors", Owner: "correlation", Description: "correlation: pull connector definitions by name", History: 1, MaxBytes: 16 * mib,
			Discard: refuse, Why: "one key per connector"},
		{Kind: KindKV, Name: "correlation_connector_state", Owner: "correlation", Description: "correlation: pull connectors' watermarks and counts", History: 1, MaxBytes: 16 * mib,
			Discard: refuse, Why: "one key per connector"},

		// service mapping
		{Kind: KindKV, Name: "mapping_services", Owner: "mapping", Description: "application services: entry point, site, schedule, state of the map", History: 1, MaxBytes: 64 * mib,
			Discard: refuse, Why: "one key per application service"},
		{Kind: KindKV, Name: "mapping_maps", Owner: "mapping", Description: "maps of application services (the last few versions)", History: 5, MaxBytes: 256 * mib,
			Discard: refuse, Why: "one key per service, five versions"},
		{Kind: KindKV, Name: "mapping_runs", Owner: "mapping", Description: "mapping runs in progress: owner replica and heartbeat, resumed after a crash", History: 1, MaxBytes: 16 * mib,
			Discard: refuse, Why: "one key per run in progress, deleted when it ends"},

		// importer
		{Kind: KindKV, Name: "import_runs", Owner: "importer", Description: "import runs: state, counters, map, staging progress", History: 1, MaxBytes: 256 * mib,
			Discard: refuse, Why: "one key per run"},
		{Kind: KindKV, Name: "import_maps", Owner: "importer", Description: "stored transform maps: one key per name, its versions as history", History: 64, MaxBytes: 64 * mib,
			Discard: refuse, Why: "one key per map, its versions as history"},
		{Kind: KindKV, Name: "import_schedules", Owner: "importer", Description: "import schedules: cron, map, file, last slot fired", History: 1, MaxBytes: 16 * mib,
			Discard: refuse, Why: "one key per schedule"},
		{Kind: KindKV, Name: "import_sources", Owner: "importer", Description: "import data sources read through a site's bridges", History: 1, MaxBytes: 16 * mib,
			Discard: refuse, Why: "one key per source definition"},
		{Kind: KindObject, Name: "import_uploads", Owner: "importer", Description: "files uploaded for import runs, until staged",
			MaxAge: 7 * day, MaxBytes: 1 * gib, Discard: refuse, Why: "an upload past the limit is refused with the error (413-like), never a silently cut file"},
		{Kind: KindObject, Name: "import_schedule_files", Owner: "importer", Description: "files of scheduled imports, until their schedule is removed",
			MaxBytes: 512 * mib, Discard: refuse, Why: "one file per schedule"},

		// agents
		{Kind: KindObject, Name: "bridge_builds", Owner: "agents", Description: "outpost-bridge builds, signed with the hub's release key, served to bridges by svc.agents.build_chunk",
			MaxBytes: 2 * gib, Discard: refuse, Why: "a build is added by hand (outpost bridge-builds add): at the limit the add is refused with the error, never an older build dropped that sites are pinned to"},
	}
}

// StoreNamed is the table's line for a stream or bucket name (at the default limits).
func StoreNamed(name string) (Store, bool) {
	for _, s := range Stores(DefaultLimits()) {
		if s.Name == name {
			return s, true
		}
	}
	return Store{}, false
}

// JetStreamName is the name of the stream JetStream keeps the store in.
func (s Store) JetStreamName() string {
	switch s.Kind {
	case KindKV:
		return "KV_" + s.Name
	case KindObject:
		return "OBJ_" + s.Name
	}
	return s.Name
}

func mustStore(kind StoreKind, name string) Store {
	s, ok := StoreNamed(name)
	if !ok || s.Kind != kind {
		// a programming error found by the first test that starts the service
		panic(fmt.Sprintf("bus: %s %q is not in the stores table (libs/bus/stores.go): add it there with its limits, discard policy and why, and to docs/architecture.md", kind, name))
	}
	return s
}

// StreamConfig is the stream's configuration from its line of the table.
func (s Store) StreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: s.Name, Description: s.Description, Subjects: s.Subjects, Retention: s.Retention,
		MaxBytes: s.MaxBytes, MaxMsgs: nonZero(s.MaxMsgs), MaxAge: s.MaxAge, MaxMsgsPerSubject: nonZero(s.MaxMsgsPerSubject),
		MaxMsgSize: s.MaxMsgSize, Discard: s.Discard, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
		Duplicates: s.Duplicates, AllowMsgTTL: s.AllowMsgTTL, MaxConsumers: s.MaxConsumers}
}

// KVConfig is the bucket's configuration from its line of the table.
func (s Store) KVConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: s.Name, Description: s.Description, History: max(s.History, 1), TTL: s.MaxAge,
		MaxBytes: s.MaxBytes, Storage: jetstream.FileStorage, Replicas: max(replicas, 1), LimitMarkerTTL: s.LimitMarkerTTL}
}

// ObjectStoreConfig is the object store's configuration from its line of the table.
func (s Store) ObjectStoreConfig(replicas int) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{Bucket: s.Name, Description: s.Description, TTL: s.MaxAge, MaxBytes: s.MaxBytes,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1)}
}

// Stream is the configuration of a stream of the table (default limits), for the service
// that creates it. It panics for a name not in the table.
func Stream(name string) jetstream.StreamConfig {
	return mustStore(KindStream, name).StreamConfig(1)
}

// KV is the configuration of a bucket of the table (default limits). It panics for a name
// not in the table.
func KV(bucket string) jetstream.KeyValueConfig { return mustStore(KindKV, bucket).KVConfig(1) }

// ObjectStore is the configuration of an object store of the table (default limits). It
// panics for a name not in the table.
func ObjectStore(bucket string) jetstream.ObjectStoreConfig {
	return mustStore(KindObject, bucket).ObjectStoreConfig(1)
}

func nonZero(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// StreamOfSubject names the stream of the table whose subjects take subject ("" none).
func StreamOfSubject(subject string) string {
	for _, s := range Stores(DefaultLimits()) {
		for _, p := range s.Subjects {
			if subjectMatches(p, subject) {
				return s.Name
			}
		}
	}
	return ""
}
