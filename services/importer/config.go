// Package importer is the import service: files (CSV, XLSX, XML, JSON, JSON Lines), uploaded
// or read through a site's bridges, and SQL databases, LDAP directories and REST APIs read
// through them (stored sources: stage_bridge.go), are staged row by row in the IMPORTS
// stream (the import set, import.<set>.rows, each row with its position), transformed by a
// map into CI payloads reconciled by the CMDB under the map's source name, and every row's
// outcome is kept (import.<run>.out.<outcome>) and counted in the run's record (KV
// import_runs). A run resumes after a restart from its staged rows and recorded outcomes:
// no row is read or counted twice.
package importer

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Service is the name on the bus: svc.importer.<op>.
const Service = api.Service

// ReceiptsConsumer is the durable consumer of the CMDB's receipts (every source: a map
// names its own, "import" by default, and sources such as "import:hr" share
// cmdb.ingested.other).
const ReceiptsConsumer = "importer-receipts"

// RefusalsConsumer reads what the CMDB dead-lettered: a row whose payload the CMDB refused
// (an invalid related CI, say) is an error with the CMDB's reason at once, instead of after
// ReceiptWait.
const RefusalsConsumer = "importer-refusals"

// KVRuns holds run records by run ID.
const KVRuns = "import_runs"

// Config of the import service.
type Config struct {
	// MaxRuns bounds the runs transforming at once (the vendor's limit users know: 10);
	// more wait, queued.
	MaxRuns int
	// InFlight bounds a run's rows sent to the CMDB without a receipt yet.
	InFlight int
	// RowsPerPayload is how many rows travel to the CMDB in one payload (each row's items
	// under refs of their own, each row's outcome read from the receipt by its ref). One
	// message, one receipt and one place in a CMDB transaction per row cost the hub about
	// 400 µs of CPU a row; many rows per payload share them. 1 sends every row alone (as
	// before; for comparison, or to debug one row at a time).
	RowsPerPayload int
	// Partitions of the CMDB ingest stream: the cmdb service's count (default 8).
	Partitions int
	// ReceiptWait is how long a run waits for the CMDB's receipts once nothing else is left;
	// rows still without one are errors then (their payload was dead-lettered).
	ReceiptWait time.Duration
	// TempDir is where uploaded files are spooled while read (default: the OS's).
	TempDir string
	// Replica names this process in the schedule lease (default: a random id; give a
	// stable one so a restarted replica takes its lease back at once).
	Replica string
	// ScheduleLease is the TTL of the lease of the replica firing schedules.
	ScheduleLease time.Duration
	// ScheduleTick is how often the active replica looks for a due schedule.
	ScheduleTick time.Duration
}

// Rows per CMDB payload. The CMDB reconciles at most 4,096 items in one transaction; a
// payload of 256 rows with a few related CIs each stays well inside it.
const (
	DefaultRowsPerPayload = 256
	MaxRowsPerPayload     = 1024
)

// DefaultConfig is the import service of `outpost up`.
func DefaultConfig() Config {
	return Config{MaxRuns: 10, InFlight: 8192, RowsPerPayload: DefaultRowsPerPayload, Partitions: 8, ReceiptWait: 60 * time.Second, Replica: "importer-" + envelope.NewID(),
		ScheduleLease: 10 * time.Second, ScheduleTick: time.Second}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.MaxRuns < 1 {
		errs = append(errs, fmt.Errorf("max runs %d: at least 1", c.MaxRuns))
	}
	if c.InFlight < 1 {
		errs = append(errs, fmt.Errorf("in-flight rows %d: at least 1", c.InFlight))
	}
	if c.RowsPerPayload < 1 || c.RowsPerPayload > MaxRowsPerPayload {
		errs = append(errs, fmt.Errorf("rows per payload %d: want 1 to %d (default %d)", c.RowsPerPayload, MaxRowsPerPayload, DefaultRowsPerPayload))
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("partitions %d: at least 1 (the cmdb service's count)", c.Partitions))
	}
	if c.ReceiptWait <= 0 {
		errs = append(errs, fmt.Errorf("receipt wait %s: want a positive duration", c.ReceiptWait))
	}
	if c.Replica == "" {
		errs = append(errs, errors.New("replica: empty (a name for this process in the schedule lease)"))
	}
	if c.ScheduleLease < time.Second {
		errs = append(errs, fmt.Errorf("schedule lease %s: at least 1s", c.ScheduleLease))
	}
	if c.ScheduleTick <= 0 || c.ScheduleTick > time.Minute {
		errs = append(errs, fmt.Errorf("schedule tick %s: want a positive duration up to 1m (cron slots are minutes)", c.ScheduleTick))
	}
	return errors.Join(errs...)
}

// Deps are what Run needs from its host process.
type Deps struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Logger *slog.Logger
	Tracer trace.TracerProvider
	// Clock stamps runs (created, finished, the payloads' observed time) and drives the
	// receipt wait, retries and the save loop; default the real one (clock.Or).
	Clock clock.Clock
	// Ready, when set, is called once the endpoints answer (the hub's /healthz waits for it).
	Ready func()
}

// Consumers are the durable consumers the import service needs; the hub adds them to its
// topology.
func Consumers() []bus.ConsumerSpec {
	return []bus.ConsumerSpec{{
		Stream: bus.StreamChanges, Name: ReceiptsConsumer, Filters: []string{bus.IngestedSubject(">")},
		AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 4000,
		Description: "the CMDB's receipts: what each import row's payload became",
	}, {
		Stream: bus.StreamDLQ, Name: RefusalsConsumer, Filters: []string{bus.DLQSubject("cmdb") + ".>"},
		AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 1000,
		Description: "payloads the CMDB refused: the import rows they came from are errors with the CMDB's reason",
	}}
}

// rowsSubject is import.<set>.rows: a set's staged rows, in source order.
func rowsSubject(set string) string { return "import." + set + ".rows" }

// outcomeSubject is import.<run>.out.<outcome>: the run's row outcomes, by outcome so that
// "the errors of a run" is one filtered read.
func outcomeSubject(run, outcome string) string { return "import." + run + ".out." + outcome }
