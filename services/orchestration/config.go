package orchestration

import (
	"errors"
	"fmt"
	"time"
)

// Config of the orchestration service.
type Config struct {
	// Replica names this replica in the active lease; the hub's is stable per data dir so a
	// restarted hub takes its own lease back at once. Default: a random id.
	Replica string
	// ActiveLease is the TTL of the active/standby lease (active.go): a replica that dies
	// is replaced within it.
	ActiveLease time.Duration
	// InlineOutput is the largest output kept in the run itself (bytes of JSON); a larger
	// one goes to the object store and the run keeps a reference (outputs.go).
	InlineOutput int
	// MaxOutput caps an output kept by reference; a larger one is replaced by its size and
	// a note.
	MaxOutput int
	// SnapshotEvery: a run's snapshot is rewritten after this many events of its history
	// (besides when it starts, waits or ends), bounding what a resume reads.
	SnapshotEvery int
	// HistoryMaxAge and HistoryMaxBytes bound the WORKFLOW_RUNS stream (history.go).
	HistoryMaxAge   time.Duration
	HistoryMaxBytes int64
	// IdempotencyTTL is how long a run_start idempotency key keeps naming its run (KV
	// bucket KVRunKeys): a repeat within it returns that run.
	IdempotencyTTL time.Duration
}

// DefaultConfig is what the hub runs.
func DefaultConfig() Config {
	return Config{ActiveLease: 10 * time.Second, InlineOutput: 16 << 10, MaxOutput: 64 << 20, SnapshotEvery: 32,
		HistoryMaxAge: 30 * 24 * time.Hour, HistoryMaxBytes: 2 << 30,
		IdempotencyTTL: 7 * 24 * time.Hour}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.ActiveLease < time.Second {
		errs = append(errs, fmt.Errorf("ActiveLease %s: want at least 1s", c.ActiveLease))
	}
	if c.InlineOutput < 1024 || c.InlineOutput > 256<<10 {
		errs = append(errs, fmt.Errorf("InlineOutput %d: want 1 KiB to 256 KiB (a run's events carry it)", c.InlineOutput))
	}
	if c.MaxOutput < c.InlineOutput {
		errs = append(errs, fmt.Errorf("MaxOutput %d: want at least InlineOutput (%d)", c.MaxOutput, c.InlineOutput))
	}
	if c.SnapshotEvery < 1 {
		errs = append(errs, fmt.Errorf("SnapshotEvery %d: want at least 1", c.SnapshotEvery))
	}
	if c.HistoryMaxAge < time.Hour {
		errs = append(errs, fmt.Errorf("HistoryMaxAge %s: want at least 1h (runs wait for approvals)", c.HistoryMaxAge))
	}
	if c.HistoryMaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("HistoryMaxBytes %d: want at least 1 MiB", c.HistoryMaxBytes))
	}
	if c.IdempotencyTTL < time.Hour {
		errs = append(errs, fmt.Errorf("IdempotencyTTL %s: want at least 1h (a caller retries a start for a while)", c.IdempotencyTTL))
	}
	return errors.Join(errs...)
}
